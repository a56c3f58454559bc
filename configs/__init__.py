"""Config files and the schema that validates them."""

from configs.schema import DEFAULT_CONFIG, ConfigError, PipelineConfig, dump_config, load_config, parse_config

__all__ = ["DEFAULT_CONFIG", "ConfigError", "PipelineConfig", "dump_config", "load_config", "parse_config"]
