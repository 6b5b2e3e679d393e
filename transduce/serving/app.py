"""The HTTP service: routes and schemas over `inference.Translator`, nothing more.

    POST /v1/translate   {"texts": [...], "beam": 5, "nbest": 2, ...}  -> outputs with scores (+ attention)
    GET  /health         503 while the model loads, 200 once it serves
    GET  /metrics        Prometheus text format
    GET  /               a page to try the model;  /docs  the OpenAPI documentation

The model folder is fixed when the app is made; no request can name a path. Every error is a
JSON body {"error": "..."} with its status (401, 413, 422, 503, 504, 500), and the service
keeps serving after each.
"""
from __future__ import annotations

import asyncio
import dataclasses
import hmac
import math
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from transduce.config import ConfigError, ServeConfig
from transduce.inference import Translation, Translator
from transduce.serving.batcher import BatchOptions, Batcher
from transduce.serving.limits import BodySizeLimit
from transduce.serving.metrics import ServiceMetrics
from transduce.serving.schemas import ErrorBody, Health, Output, Result, TranslateRequest, TranslateResponse

ERRORS = {401: {"model": ErrorBody}, 413: {"model": ErrorBody}, 422: {"model": ErrorBody},
          503: {"model": ErrorBody}, 504: {"model": ErrorBody}}


class ServiceError(Exception):
    def __init__(self, status: int, message: str, reason: str):
        super().__init__(message)
        self.status, self.message, self.reason = status, message, reason


def create_app(model_dir: str | Path, settings: ServeConfig | None = None, *, api_key: str | None = None,
               load: Callable[[], Translator] | None = None) -> FastAPI:
    """The service for one model folder. `load` builds the Translator (default: from `model_dir`
    on the best device); it runs in the background, /health says when it is done."""
    settings = settings or ServeConfig()
    model_dir = Path(model_dir)
    load = load or (lambda: Translator.from_dir(model_dir))
    metrics = ServiceMetrics()
    state: dict = {"translator": None, "error": None}

    def decode(texts: list[str], options: BatchOptions) -> list[list[Translation]]:
        start = time.perf_counter()
        rows = state["translator"].translate_nbest(texts, nbest=options.nbest, attention=options.attention,
                                                   **dataclasses.asdict(options.decode))
        metrics.batch(len(texts), sum(len(t.tokens) for row in rows for t in row), time.perf_counter() - start)
        return rows

    batcher = Batcher(decode, max_batch_size=settings.max_batch_size, max_wait_s=settings.max_wait_ms / 1000,
                      enabled=settings.batching)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        loading = asyncio.get_running_loop().run_in_executor(None, _load_into, state, load, metrics)
        yield
        await batcher.stop()
        await asyncio.gather(loading, return_exceptions=True)

    app = FastAPI(title="transduce", summary=f"Sequence-to-sequence model {model_dir.name}", lifespan=lifespan)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes,
                       on_refuse=lambda: _count_error(metrics, "/v1/translate", 413, "body_too_large"))
    _add_error_handlers(app, metrics)
    _add_status_routes(app, state, metrics, model_dir.name, api_key)

    @app.post("/v1/translate", response_model=TranslateResponse, responses=ERRORS)
    async def translate(body: TranslateRequest, request: Request) -> TranslateResponse:
        start = time.perf_counter()
        _check_key(request, api_key)
        _check_limits(body, settings)
        if state["translator"] is None:
            raise ServiceError(503, state["error"] or "the model is still loading", "not_ready")
        options = _batch_options(state["translator"], body)
        try:
            rows = await asyncio.wait_for(batcher.submit(body.texts, options), settings.timeout_s)
        except asyncio.TimeoutError:
            raise ServiceError(504, f"no answer within {settings.timeout_s:g} s", "timeout") from None
        except ValueError as exc:  # options the decoder refuses together
            raise ServiceError(422, str(exc), "invalid_request") from None
        results = [Result(source_tokens=row[0].source_tokens if row else [],
                          outputs=[_output(t, body.attention) for t in row]) for row in rows]
        elapsed = time.perf_counter() - start
        metrics.requests.labels("/v1/translate", "200").inc()
        metrics.latency.labels("/v1/translate").observe(elapsed)
        return TranslateResponse(results=results, elapsed_ms=round(elapsed * 1000, 3))

    return app


def _add_error_handlers(app: FastAPI, metrics: ServiceMetrics) -> None:
    """Every error as a JSON body {"error": ...} with its status, counted by reason."""

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError):
        return _error(metrics, request, exc.status, exc.message, exc.reason)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        problems = jsonable_encoder(exc.errors())
        summary = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', [])[1:]) or 'body'}: {e.get('msg')}"
                            for e in problems[:5])
        return _error(metrics, request, 422, summary, "invalid_request", detail=problems)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return _error(metrics, request, exc.status_code, str(exc.detail), "http")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        return _error(metrics, request, 500, f"internal error: {type(exc).__name__}: {exc}", "internal")


def _add_status_routes(app: FastAPI, state: dict, metrics: ServiceMetrics, model_name: str,
                       api_key: str | None) -> None:
    """/health, /metrics and the page at /."""

    @app.get("/health", response_model=Health, responses={503: {"model": Health}})
    async def health() -> JSONResponse:
        body = Health(status="ok" if state["translator"] else "error" if state["error"] else "loading",
                      model=model_name, error=state["error"], api_key_required=api_key is not None)
        return JSONResponse(body.model_dump(), status_code=200 if state["translator"] else 503)

    @app.get("/metrics", response_class=Response)
    async def prometheus() -> Response:
        payload, content_type = metrics.render()
        return Response(payload, media_type=content_type)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(resources.files("transduce.serving").joinpath("static/index.html").read_text("utf-8"))


def _batch_options(translator: Translator, body: TranslateRequest) -> BatchOptions:
    """The model's decoding settings with the request's replacements, checked before the request waits."""
    try:
        decode = translator.decode_options(**body.decode_options())
    except ConfigError as exc:  # a combination the config refuses
        raise ServiceError(422, str(exc), "invalid_request") from None
    return BatchOptions(decode, body.nbest, body.attention)


def _load_into(state: dict, load: Callable[[], Translator], metrics: ServiceMetrics) -> None:
    try:
        state["translator"] = load()
        metrics.model_loaded.set(1)
    except Exception as exc:  # reported by /health; the process stays up to say so
        state["error"] = f"cannot load the model: {exc}"


def _check_key(request: Request, api_key: str | None) -> None:
    if api_key is None:
        return
    given = request.headers.get("x-api-key")
    if given is None and request.headers.get("authorization", "").lower().startswith("bearer "):
        given = request.headers["authorization"][7:]
    if given is None or not hmac.compare_digest(given.encode(), api_key.encode()):
        raise ServiceError(401, "missing or wrong API key (header X-API-Key or Authorization: Bearer)", "auth")


def _check_limits(body: TranslateRequest, settings: ServeConfig) -> None:
    if len(body.texts) > settings.max_texts:
        raise ServiceError(422, f"texts: at most {settings.max_texts} per request, got {len(body.texts)}",
                           "too_many_texts")
    for index, text in enumerate(body.texts):
        if len(text) > settings.max_input_chars:
            raise ServiceError(422, f"texts[{index}]: {len(text)} characters, at most {settings.max_input_chars}",
                               "text_too_long")
    if body.min_length is not None and body.max_length is not None and body.min_length > body.max_length:
        raise ServiceError(422, f"min_length {body.min_length} is over max_length {body.max_length}",
                           "invalid_request")


def _output(t: Translation, attention: bool) -> Output:
    score = t.score if math.isfinite(t.score) else None
    return Output(text=t.text, score=score, tokens=t.tokens, attention=t.attention if attention else None)


ROUTES = ("/v1/translate", "/health", "/metrics", "/")


def _count_error(metrics: ServiceMetrics, route: str, status: int, reason: str) -> None:
    metrics.requests.labels(route if route in ROUTES else "other", str(status)).inc()
    metrics.errors.labels(reason).inc()


def _error(metrics: ServiceMetrics, request: Request, status: int, message: str, reason: str,
           detail=None) -> JSONResponse:
    _count_error(metrics, request.url.path, status, reason)
    body = {"error": message}
    if detail is not None:
        body["detail"] = detail
    return JSONResponse(body, status_code=status)
