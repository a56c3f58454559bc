"""Config files and the schema that validates them."""

from configs.schema import (
    CONFIG_DIR,
    DEFAULT_CONFIG,
    ConfigError,
    PipelineConfig,
    dump_config,
    load_config,
    parse_config,
)

__all__ = [
    "CONFIG_DIR",
    "DEFAULT_CONFIG",
    "ConfigError",
    "PipelineConfig",
    "dump_config",
    "load_config",
    "parse_config",
]
