"""A small OpenAI-compatible chat server in front of any back-end, so other tools (and other machines' `openai`
back-ends) can use the model this process loaded.

    python -m pipeline.models.llm.server --port 8000 [--config C] [--host 127.0.0.1] [--api-key-env NAME]

`POST /v1/chat/completions` (no streaming, n=1) and `GET /v1/models`. Of vLLM's extra fields it honours
`repetition_penalty` and the answer prefill: `continue_final_message: true, add_generation_prompt: false` with a
final assistant message continues that message. Content may be OpenAI content parts (text, image_url): images reach
the back-end, and one whose model reads text only answers 400, as vLLM serving a text model does.
Bound to 127.0.0.1 unless told otherwise;
with `--api-key-env` every request must carry `Authorization: Bearer <that variable's value>`.
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from configs.secrets import exposure_warning
from pipeline.models.llm import Llm, LlmBackendError, load_llm
from pipeline.models.llm.base import ImageInputError

logger = logging.getLogger(__name__)


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ImageUrl(BaseModel):
    url: str
    detail: str | None = None


class ImagePart(BaseModel):
    type: Literal["image_url"]
    image_url: ImageUrl


class ChatMessage(BaseModel):
    role: str
    content: str | list[Annotated[TextPart | ImagePart, Field(discriminator="type")]]


class ChatRequest(BaseModel):
    """The fields this server honours; others that OpenAI clients send (user, logprobs, ...) are ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = None
    repetition_penalty: float | None = Field(default=None, gt=0)
    continue_final_message: bool = False
    add_generation_prompt: bool = True
    n: int = Field(default=1, ge=1, le=1)
    stream: bool = False


class ApiError(Exception):
    def __init__(self, status: HTTPStatus, message: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.kind = status, kind


class ChatServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], llm: Llm, api_key: str | None = None) -> None:
        super().__init__(address, ChatHandler)
        self.llm, self.api_key = llm, api_key


class ChatHandler(BaseHTTPRequestHandler):
    server: ChatServer

    def do_GET(self) -> None:
        self._answer(self._models)

    def do_POST(self) -> None:
        self._answer(self._chat)

    def _answer(self, route: Callable[[], dict]) -> None:
        try:
            self._authorize()
            status, body = HTTPStatus.OK, route()
        except ApiError as error:
            status, body = error.status, {"error": {"message": str(error), "type": error.kind}}
        except ImageInputError as error:
            status, body = HTTPStatus.BAD_REQUEST, {"error": {"message": str(error), "type": "invalid_request_error"}}
        except LlmBackendError as error:
            status, body = HTTPStatus.BAD_GATEWAY, {"error": {"message": str(error), "type": "backend_error"}}
        except Exception as error:  # answer 500 rather than drop the connection
            logger.exception("chat request failed")
            message = f"{type(error).__name__}: {error}"
            status, body = HTTPStatus.INTERNAL_SERVER_ERROR, {"error": {"message": message, "type": "server_error"}}
        data = json.dumps(body, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorize(self) -> None:
        expected = self.server.api_key
        if expected and not hmac.compare_digest(self.headers.get("Authorization", ""), f"Bearer {expected}"):
            raise ApiError(HTTPStatus.UNAUTHORIZED, "missing or wrong API key", "authentication_error")

    def _models(self) -> dict:
        if self.path.rstrip("/") != "/v1/models":
            raise ApiError(HTTPStatus.NOT_FOUND, f"no route GET {self.path}")
        return {"object": "list", "data": [{"id": self.server.llm.model_id, "object": "model", "owned_by": "local"}]}

    def _chat(self) -> dict:
        if self.path.rstrip("/") != "/v1/chat/completions":
            raise ApiError(HTTPStatus.NOT_FOUND, f"no route POST {self.path}")
        try:
            request = ChatRequest.model_validate_json(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        except ValidationError as error:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in error.errors())
            raise ApiError(HTTPStatus.BAD_REQUEST, f"invalid request: {problems}") from None
        llm = self.server.llm
        if request.stream:
            raise ApiError(HTTPStatus.BAD_REQUEST, "streaming is not supported")
        if request.model not in (None, llm.model_id):
            raise ApiError(HTTPStatus.NOT_FOUND, f"model {request.model!r} is not served here; {llm.model_id!r} is")
        self._check_prefill(request)
        overrides = {
            "max_new_tokens": request.max_completion_tokens or request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "seed": request.seed,
            "repetition_penalty": request.repetition_penalty,
        }
        params = replace(llm.params, **{name: value for name, value in overrides.items() if value is not None})
        completion = llm.complete([message.model_dump(exclude_none=True) for message in request.messages], params)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": llm.model_id,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": completion.text},
                    "finish_reason": completion.finish_reason,
                }
            ],
        }

    @staticmethod
    def _check_prefill(request: ChatRequest) -> None:
        """The back-ends continue a conversation that ends with an assistant message, so that is allowed only when
        asked for, as vLLM asks for it; an assistant turn after an assistant turn cannot be served."""
        if request.continue_final_message and request.add_generation_prompt:
            raise ApiError(HTTPStatus.BAD_REQUEST, "continue_final_message needs add_generation_prompt: false")
        ends_with_answer = request.messages[-1].role == "assistant"
        if request.continue_final_message and not ends_with_answer:
            raise ApiError(HTTPStatus.BAD_REQUEST, "continue_final_message needs a final assistant message")
        if ends_with_answer and not request.continue_final_message:
            raise ApiError(
                HTTPStatus.BAD_REQUEST,
                "a final assistant message is served only as a prefill (continue_final_message: true, "
                "add_generation_prompt: false)",
            )
        if not request.add_generation_prompt and not request.continue_final_message:
            raise ApiError(HTTPStatus.BAD_REQUEST, "add_generation_prompt: false is served only with a prefill")

    def log_message(self, format: str, *args) -> None:
        logger.debug("%s %s", self.address_string(), format % args)


def main(argv: list[str] | None = None) -> None:
    from configs import load_config

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="YAML config whose `llm` section picks the back-end (default: the defaults)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--api-key-env", help="environment variable holding the key clients must send")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    api_key = os.environ.get(args.api_key_env) if args.api_key_env else None
    if args.api_key_env and not api_key:
        parser.error(f"--api-key-env {args.api_key_env}: that environment variable is empty")
    server = ChatServer((args.host, args.port), load_llm(load_config(args.config).llm), api_key)
    logger.info("serving %s on http://%s:%d/v1", server.llm.model_id, *server.server_address[:2])
    if warning := exposure_warning("the chat server", args.host):
        logger.warning(warning + ("" if api_key else " (and no --api-key-env)"))
    with contextlib.suppress(KeyboardInterrupt), server:
        server.serve_forever()


if __name__ == "__main__":
    main()
