"""Serve an encoder (or a translator, a captioner) over HTTP, with limits and stealing defences.

:class:`ModelService` holds what every family's service shares (parsing, limits, budget,
errors); :class:`EncoderService`, :class:`TranslatorService` and :class:`CaptionerService`
add their family's ``/v1/info`` fields and answer at their own route.

Protocol (docs/ARCHITECTURE.md, "HTTP"), spoken by the clients of :mod:`leakprobe.serving.client`:

- ``GET /v1/info`` -> ``{"kind": "encoder", "input_size", "embed_dim", "tokens",
  "tokens_in_embedding_space", "max_batch", "max_body_bytes", "max_image_side",
  "encodings", "max_queries", "queries_used", "defence"}``
  (``tokens_in_embedding_space``: the model's declaration, true/false, or null;
  ``max_batch``: images per request; ``max_body_bytes``: the request body limit;
  ``encodings``: the image forms decoded, see :mod:`leakprobe.serving.wire`). Clients size
  their requests from these limits.
- ``POST /v1/embed`` with ``{"array": base64 .npy of shape (B, 3, H, W)}`` (uint8 levels
  ``k / 255``, the compact form, or floats in [0, 1]) or ``{"images": [base64 PNG, ...]}``
  and optionally ``"tokens": true`` ->
  ``{"embeddings": [[...]], "tokens": [[[...]]] | null, "queries_used": n}``; with
  ``"response_encoding": "npy"`` the answer carries ``embeddings_npy`` / ``tokens_npy``
  (base64 float32 .npy) instead, which is faster for large answers.
- ``POST /v1/translate`` (image-to-image services) takes the same requests and answers
  ``{"outputs_npy": base64 float32 .npy (B, C, H, W), "queries_used": n}``
- ``POST /v1/caption`` (captioning services) takes the same requests and answers
  ``{"captions": ["a red circle ...", ...], "queries_used": n}``
- ``POST /v1/embed_images`` and ``POST /v1/embed_texts`` (image-text services,
  :mod:`leakprobe.serving.image_text`): images as above, texts as ``{"texts": [...]}``; both
  answer L2-normalised ``embeddings`` (or ``embeddings_npy``) and ``queries_used``
- ``GET /v1/usage`` -> the caller's usage (:meth:`~leakprobe.serving.keys.Clients.usage`:
  ``name``, ``queries``, ``budget``, ``remaining``, ``first_seen``, ``last_seen``,
  ``coverage``, ``noise_std``); for the admin key ``{"clients": [...]}``, every key's. Without
  keys it answers the anonymous client's (every caller's) usage.

With API keys (:mod:`leakprobe.serving.keys`, ``leakprobe serve --api-keys``) every ``/v1/*``
request needs ``Authorization: Bearer KEY``, and ``/v1/info`` adds ``client``: the caller's
usage. Without keys anyone who reaches the port may query.

Errors are JSON ``{"error": message}`` with a status: 400 malformed request, 401 missing or
unknown API key, 403 query budget of the service exhausted (or the admin key used to query),
413 payload too large (the message names the ``leakprobe serve`` option that sets the limit:
``--max-body-mb``, ``--max-batch`` or ``--max-image-side``), 429 rate limited (with
``Retry-After``) or the key's budget spent (with ``remaining``, ``budget`` and ``used`` in the
body), 500 model failure. Keys are checked before the body is read; every limit and budget
before the payload's pixels are decoded, and the model never runs for a refused request.
The server keeps serving after every error. Embeddings go out as JSON numbers: a float32
value printed as a double survives the round trip exactly.

Every request is logged as one JSON line on the ``leakprobe.serve`` logger (stderr under
``leakprobe serve``): time, client address, method, path, status, body bytes, images,
milliseconds, the service's queries used, the key's name (``client_key``) and, on failure,
the error. Headers are never logged, so neither is an ``Authorization`` header or any key.
"""

from __future__ import annotations

import contextvars
import json
import logging
import math
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any, ClassVar

import torch
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from leakprobe.defences.answers import AnswerDefence, parse_answer_defence
from leakprobe.errors import LeakprobeError
from leakprobe.serving.keys import Client, ClientRefused, Clients
from leakprobe.serving.wire import (
    ENCODINGS,
    PayloadTooLarge,
    count_images,
    decode_images,
    decode_png,
    encode_npy,
)

#: The logger of the per-request lines (one JSON object per line).
request_log = logging.getLogger("leakprobe.serve")

#: The ``leakprobe serve`` option behind each limit, named in 413 answers.
LIMIT_OPTIONS = {"max_body_bytes": "--max-body-mb", "max_batch": "--max-batch",
                 "max_image_side": "--max-image-side", "max_texts": "--max-texts",
                 "max_text_chars": "--max-text-chars"}

#: The client of the request being answered (set by :meth:`ModelService.handle`).
_CLIENT: contextvars.ContextVar[Client | None] = contextvars.ContextVar("leakprobe_client",
                                                                       default=None)


@dataclass
class ServeConfig:
    """Limits and output perturbation of the service.

    Attributes:
        max_batch: images per request (announced at ``/v1/info``).
        max_body_bytes: request body size limit (announced at ``/v1/info``; clients size
            their requests from it).
        max_image_side: largest accepted image side.
        max_queries: total images the service will embed (None: unlimited).
        rate: requests per second per client (token bucket with a burst of 2x; None: off).
        noise: std of Gaussian noise added to every embedding coordinate (stealing defence).
        top_k: keep only the k largest-magnitude coordinates (stealing defence).
        round_decimals: round embeddings to this many decimals (stealing defence).
        seed: seeds the noise (and B4B's hash functions).
        defence: an answer defence spec (``leakprobe serve encoder --defence``, e.g.
            ``b4b`` or ``b4b:alpha=0.8+round:3``; see
            :func:`~leakprobe.defences.answers.parse_answer_defence`).
        max_texts: texts per request (image-text services; announced at ``/v1/info``).
        max_text_chars: characters of a request's texts in all (image-text services;
            announced at ``/v1/info``).

    ``defence``, ``noise``, ``top_k`` and ``round_decimals`` make the service's
    :class:`~leakprobe.defences.answers.AnswerDefence` (:func:`answer_defence`).
    """

    max_batch: int = 256
    max_body_bytes: int = 64 * 2**20
    max_image_side: int = 512
    max_queries: int | None = None
    rate: float | None = None
    noise: float = 0.0
    top_k: int | None = None
    round_decimals: int | None = None
    seed: int = 0
    defence: str | None = None
    max_texts: int = 256
    max_text_chars: int = 256 * 1024


def answer_defence(config: ServeConfig) -> AnswerDefence:
    """The answer defence of ``config``: its ``defence`` spec joined with its ``noise``,
    ``top_k`` and ``round_decimals`` (the same perturbations, as options).

    A ``noise`` of 0 and a ``top_k`` of 0 (or None) are off, as they always were.

    Raises:
        LeakprobeError: a negative ``noise``, ``top_k`` or ``round_decimals``, a bad
            ``defence`` spec, or one that sets a perturbation its option sets too.
    """
    options = AnswerDefence(noise=config.noise or 0.0, top_k=config.top_k or None,
                            round_decimals=config.round_decimals)
    if not config.defence:
        return options
    spec = parse_answer_defence(config.defence)
    for option, in_options, in_spec in (
            ("--noise", bool(options.noise), bool(spec.noise)),
            ("--top-k", options.top_k is not None, spec.top_k is not None),
            ("--round-decimals", options.round_decimals is not None,
             spec.round_decimals is not None)):
        if in_options and in_spec:
            raise LeakprobeError(f"--defence {config.defence} and {option} set the same "
                                 "perturbation; give it once")
    return AnswerDefence(noise=spec.noise or options.noise,
                         top_k=spec.top_k if spec.top_k is not None else options.top_k,
                         round_decimals=spec.round_decimals if spec.round_decimals is not None
                         else options.round_decimals, b4b=spec.b4b)


class ServiceError(Exception):
    """A request refused or failed: its HTTP status, message, extra headers and extra
    fields of the JSON body."""

    def __init__(self, status: int, message: str, headers: dict | None = None,
                 fields: dict | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}
        self.fields = fields or {}

    @classmethod
    def refused(cls, e: ClientRefused) -> ServiceError:
        """The answer to a request refused for its client (401, 403, 429)."""
        return cls(e.status, str(e), e.headers, e.fields)


def too_large(message: str, limit: str) -> ServiceError:
    """A 413 whose message names the ``leakprobe serve`` option that sets ``limit``."""
    option = LIMIT_OPTIONS.get(limit)
    hint = f" (this server's limit, set by leakprobe serve {option})" if option else ""
    return ServiceError(413, message + hint)


class RateLimiter:
    """Token bucket per client: ``rate`` requests per second, bursts of ``2 * rate``."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self.buckets: dict[str, tuple[float, float]] = {}
        self.lock = threading.Lock()

    def check(self, client: str) -> None:
        if not self.rate:
            return
        now = time.monotonic()
        burst = max(2 * self.rate, 1.0)
        with self.lock:
            tokens, last = self.buckets.get(client, (burst, now))
            tokens = min(burst, tokens + (now - last) * self.rate)
            if tokens < 1:
                wait = (1 - tokens) / self.rate
                self.buckets[client] = (tokens, now)
                raise ServiceError(429, "rate limit exceeded",
                                   {"Retry-After": f"{max(wait, 0.01):.2f}"})
            self.buckets[client] = (tokens - 1, now)


class ModelService:
    """The part of every service that does not depend on the model family.

    It parses and limits requests (:meth:`parse_images`), charges the service's budget and
    runs the model (:meth:`run_model`), and describes itself at ``/v1/info`` (:meth:`info`).
    A family's service sets ``kind`` and ``route``, adds its model's fields to ``/v1/info``
    in :meth:`model_info` and answers the parsed images of a request in :meth:`respond`;
    :meth:`handle` does both for one request at ``route``.

    Args:
        target: the local target served (``input_size`` and the family's query method).
        config: limits (and, for encoders, output perturbation).
        clients: who may query, their budgets and usage (:class:`~leakprobe.serving.keys.
            Clients`; default: no keys, one anonymous client).
    """

    kind: ClassVar[str] = ""
    route: ClassVar[str] = ""

    def __init__(self, target, config: ServeConfig | None = None, *,
                 clients: Clients | None = None) -> None:
        self.target = target
        self.config = config or ServeConfig()
        self.clients = clients if clients is not None else Clients()
        self.queries_used = 0
        self.lock = threading.Lock()
        self.limiter = RateLimiter(self.config.rate)

    def info(self) -> dict:
        """The ``/v1/info`` answer: family, input size, the model's fields, limits, usage.

        ``max_batch`` (images per request), ``max_body_bytes`` (request body) and
        ``max_image_side`` are what a client sizes its requests by; ``encodings`` lists the
        image forms decoded (``npy-uint8``, ``npy-float32``, ``png``).
        """
        c = self.config
        return {"kind": self.kind, "input_size": int(self.target.input_size),
                **self.model_info(), "max_batch": c.max_batch,
                "max_body_bytes": c.max_body_bytes, "max_image_side": c.max_image_side,
                "encodings": list(ENCODINGS), "max_queries": c.max_queries,
                "queries_used": self.queries_used}

    def model_info(self) -> dict:
        """The family's own fields of ``/v1/info`` (none by default)."""
        return {}

    def respond(self, images: torch.Tensor, options: dict) -> dict:
        """The JSON answer to one request's parsed ``images`` (``options``: the request)."""
        raise NotImplementedError(f"{type(self).__name__} must define respond")

    def routes(self) -> dict[str, Callable[..., dict]]:
        """Each POST route and its handler (``handler(payload, record, client=)``, as
        :meth:`handle`): ``route`` and :meth:`handle` unless a family has more."""
        return {self.route: self.handle}

    @contextmanager
    def acting_for(self, client: Client | None) -> Iterator[Client]:
        """Answer for ``client`` (default: the anonymous one) within the block: what
        :attr:`client` and :meth:`run_model` see."""
        client = client if client is not None else self.clients.anonymous
        token = _CLIENT.set(client)
        try:
            yield client
        finally:
            _CLIENT.reset(token)

    def handle(self, payload: object, record: dict | None = None, *,
               client: Client | None = None) -> dict:
        """The JSON answer to one request at ``route``: parse, limit, charge, run.

        Args:
            payload: the decoded JSON body.
            record: when given, receives ``images`` (the request's image count) once the
                request is parsed (what the request log reports).
            client: who asks (default: the anonymous client, as for an in-process call).
                Its budget is checked on the image count the payload announces before any
                pixel is decoded.
        """
        with self.acting_for(client) as who:
            try:
                announced = count_images(payload)
                if announced is not None:
                    self.clients.check(who, announced)
                images = self.parse_images(payload)
                if record is not None:
                    record["images"] = int(images.shape[0])
                return self.respond(images, payload if isinstance(payload, dict) else {})
            except ClientRefused as e:
                raise ServiceError.refused(e) from e

    def answer(self, payload: object) -> dict:
        """The JSON answer to one request at ``route`` (see :meth:`handle`)."""
        return self.handle(payload)

    def parse_images(self, payload: object) -> torch.Tensor:
        """The request's images as float (B, 3, H, W) in [0, 1], within every limit.

        Counts, sides and byte sizes are checked on the ``.npy`` header or each PNG's header
        before pixels are decoded; an oversized request is a 413 naming its option.
        """
        c = self.config
        if not isinstance(payload, dict):
            raise ServiceError(400, "request body must be a JSON object")
        try:
            if "array" in payload:
                images = decode_images(payload["array"], max_bytes=c.max_body_bytes,
                                       max_images=c.max_batch, max_side=c.max_image_side)
            elif isinstance(payload.get("images"), list):
                items = payload["images"]
                if len(items) > c.max_batch:
                    raise PayloadTooLarge(f"{len(items)} images exceed max_batch "
                                          f"{c.max_batch}", limit="max_batch")
                decoded = [decode_png(t, c.max_image_side**2, c.max_image_side)
                           for t in items]
                if len({tuple(x.shape) for x in decoded}) > 1:
                    raise ServiceError(400, "all images of a request must have the same size")
                images = torch.stack(decoded) if decoded else torch.empty(0, 3, 1, 1)
            else:
                raise ServiceError(400, "request needs 'images' (base64 PNGs) or 'array'")
        except PayloadTooLarge as e:
            raise too_large(str(e), e.limit) from e
        except LeakprobeError as e:
            raise ServiceError(400, str(e)) from e
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[0] == 0:
            raise ServiceError(400, f"images must be (B,3,H,W) with B >= 1, got "
                                    f"{tuple(images.shape)}")
        if not torch.isfinite(images).all() or images.min() < 0 or images.max() > 1:
            raise ServiceError(400, "image values must be finite and in [0, 1]")
        return images

    def _charge(self, n: int) -> None:
        limit = self.config.max_queries
        if limit is not None and self.queries_used + n > limit:
            raise ServiceError(403, f"query budget exhausted: {self.queries_used} of {limit} "
                                    f"used, {n} more requested")
        self.queries_used += n

    @property
    def client(self) -> Client:
        """The client of the request being answered (the anonymous one outside a request)."""
        return _CLIENT.get() or self.clients.anonymous

    def run_model(self, fn: Callable[[Any], Any], images: torch.Tensor | Sequence[str]):
        """Charge the budgets for ``images`` (or texts: one query each) and run
        ``fn(images)``; returns (output, used).

        The client's budget (429) and the service's (403) are checked, and both charged,
        before the model runs; the client's usage is saved after it. A bad input becomes a
        400 and any other model failure a 500: the service stays up.
        """
        client = self.client
        n = len(images)
        with self.lock:
            try:
                self.clients.check(client, n)
            except ClientRefused as e:
                raise ServiceError.refused(e) from e
            self._charge(n)
            self.clients.charge(client, n)
            try:
                out = fn(images)
            except LeakprobeError as e:
                raise ServiceError(400, str(e)) from e
            except Exception as e:  # a model failure must not take the service down
                raise ServiceError(500, f"model failed: {type(e).__name__}") from e
            finally:
                self.clients.save()
            return out, self.queries_used


class EncoderService(ModelService):
    """Serves an :class:`~leakprobe.targets.encoder.Encoder` at ``/v1/embed``.

    Its answers can be perturbed against stealing (``defence``, ``noise``, ``top_k``,
    ``round_decimals`` of :class:`ServeConfig`): :attr:`defence`, an
    :class:`~leakprobe.defences.answers.AnswerDefence` applied to every answer with the
    service's generator (seeded by ``ServeConfig.seed``, advanced request by request). Under
    B4B each client (API key, or the anonymous one) has its own coverage, kept with its usage
    in the state file; tokens are not served then (they would bypass the noise).
    """

    kind = "encoder"
    route = "/v1/embed"

    def __init__(self, encoder, config: ServeConfig | None = None, *,
                 clients: Clients | None = None) -> None:
        super().__init__(encoder, config, clients=clients)
        self.defence = answer_defence(self.config)
        self.generator = torch.Generator().manual_seed(self.config.seed)
        if self.defence.b4b is not None and getattr(encoder, "embed_dim", None):
            self.clients.check_b4b_width(int(encoder.embed_dim))

    @property
    def encoder(self):
        """The served encoder (the target)."""
        return self.target

    def model_info(self) -> dict:
        same_space = getattr(self.target, "tokens_in_embedding_space", None)
        return {"embed_dim": int(getattr(self.target, "embed_dim", 0)),
                "tokens": bool(getattr(self.target, "has_tokens", False))
                and self.defence.b4b is None,
                "tokens_in_embedding_space": same_space if isinstance(same_space, bool) else None}

    def info(self) -> dict:
        # ``round_decimals: 0`` (rounding to integers) has never been announced: the falsy
        # values are left out so that /v1/info stays what it was for every configuration
        defence = {k: v for k, v in self.defence.to_dict().items() if v}
        return {**super().info(), "defence": defence}

    def _perturb(self, emb: torch.Tensor) -> torch.Tensor:
        """``emb`` through the service's answer defence (its generator advances; under B4B
        the requesting client's coverage grows)."""
        b4b = None
        if self.defence.b4b is not None:
            b4b = self.clients.b4b_client(self.client, self.defence.b4b,
                                          dim=int(emb.shape[1]), seed=self.config.seed)
        return self.defence.apply(emb, generator=self.generator, client=b4b)

    def embed(self, payload: object) -> dict:
        """Embeddings (and tokens when asked) of the request's images, perturbed if set."""
        return self.handle(payload)

    def respond(self, images: torch.Tensor, options: dict) -> dict:
        want_tokens = bool(options.get("tokens", False))
        if want_tokens and self.defence.b4b is not None:
            raise ServiceError(400, "tokens are not served under the b4b defence (they would "
                                    "bypass its noise); ask for embeddings only")

        def query(x: torch.Tensor):
            return self._perturb(self.target.embed(x)), (
                self.target.tokens(x) if want_tokens else None)

        (emb, tok), used = self.run_model(query, images)
        if options.get("response_encoding") == "npy":
            return {"embeddings_npy": encode_npy(emb),
                    "tokens_npy": None if tok is None else encode_npy(tok), "queries_used": used}
        return {"embeddings": emb.tolist(), "tokens": None if tok is None else tok.tolist(),
                "queries_used": used}


class TranslatorService(ModelService):
    """Serves an image-to-image target at ``/v1/translate`` (same limits and errors).

    Answers ``{"outputs_npy": base64 float32 .npy (B, C, H, W), "queries_used": n}``.
    """

    kind = "image2image"
    route = "/v1/translate"

    def model_info(self) -> dict:
        return {"out_channels": int(getattr(self.target, "out_channels", 0))}

    def respond(self, images: torch.Tensor, options: dict) -> dict:
        out, used = self.run_model(self.target.translate, images)
        return {"outputs_npy": encode_npy(out), "queries_used": used}


class CaptionerService(ModelService):
    """Serves a captioner at ``/v1/caption`` (same requests, limits and errors as ``/v1/embed``).

    Answers ``{"captions": [str, ...], "queries_used": n}``: one caption per image.
    """

    kind = "captioner"
    route = "/v1/caption"

    def respond(self, images: torch.Tensor, options: dict) -> dict:
        captions, used = self.run_model(self.target.caption, images)
        return {"captions": [str(c) for c in captions], "queries_used": used}


def create_app(service: ModelService) -> Starlette:
    """The Starlette application serving ``service`` (``/v1/info``, ``/v1/usage`` and its
    POST routes, :meth:`ModelService.routes`).

    Each request is answered in this order, so nothing is decoded or run for a request that
    is refused: rate limit (429), API key (401; the admin key may not query, 403), the key's
    spent budget (429), declared body size (413), body size as it streams in (413), JSON,
    payload limits on headers (413/400), the key's budget for the images announced (429),
    the service's budget (403), model. Every request is logged as one line
    (:func:`log_request`).
    """
    max_body = service.config.max_body_bytes
    clients = service.clients

    def error(e: ServiceError) -> JSONResponse:
        return JSONResponse({"error": str(e), **e.fields}, status_code=e.status,
                            headers=e.headers)

    def authenticate(request: Request) -> Client:
        try:
            return clients.authenticate(request.headers.get("authorization"))
        except ClientRefused as e:
            raise ServiceError.refused(e) from e

    def key_name(client: Client | None) -> str | None:
        return client.name if client is not None and clients.keyed else None

    async def read_only(request: Request, answer) -> JSONResponse:
        """A GET route (not rate limited): authenticate, answer ``answer(client)``, log."""
        start = time.perf_counter()
        client: Client | None = None
        try:
            client = authenticate(request)
            response, message = JSONResponse(answer(client)), None
        except ServiceError as e:
            response, message = error(e), str(e)
        log_request(request, service, status=response.status_code, body_bytes=0, images=0,
                    start=start, error=message, client_key=key_name(client))
        return response

    def info_answer(client: Client) -> dict:
        out = service.info()
        if clients.keyed and not client.admin:
            out["client"] = clients.usage(client)
        return out

    def usage_answer(client: Client) -> dict:
        return clients.usage_all() if client.admin else clients.usage(client)

    def body_too_large(size: str) -> ServiceError:
        return too_large(f"request body of {size} bytes exceeds {max_body} bytes "
                         f"({max_body / 2**20:g} MiB); send fewer images per request",
                         "max_body_bytes")

    async def info(request: Request) -> JSONResponse:
        return await read_only(request, info_answer)

    async def usage(request: Request) -> JSONResponse:
        return await read_only(request, usage_answer)

    async def answer(request: Request, handler: Callable[..., dict]) -> JSONResponse:
        start = time.perf_counter()
        record: dict = {"images": None}
        size = 0
        client: Client | None = None
        try:
            service.limiter.check(request.client.host if request.client else "?")
            client = authenticate(request)
            if client.admin:
                raise ServiceError(403, "the admin key reads /v1/info and /v1/usage only; "
                                        "query with a client key")
            try:
                clients.check(client, 0)  # a spent budget: refused before the body is read
            except ClientRefused as e:
                raise ServiceError.refused(e) from e
            length = request.headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > max_body:
                size = int(length)
                raise body_too_large(length)
            body = bytearray()
            async for chunk in request.stream():
                body += chunk
                size = len(body)
                if len(body) > max_body:
                    raise body_too_large(f"more than {max_body}")
            try:
                payload = json.loads(body)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise ServiceError(400, f"malformed JSON: {e}") from e
            del body
            from starlette.concurrency import run_in_threadpool

            response = JSONResponse(await run_in_threadpool(
                handler, payload, record, client=client))
            message = None
        except ServiceError as e:
            response, message = error(e), str(e)
        log_request(request, service, status=response.status_code, body_bytes=size,
                    images=record["images"], start=start, error=message,
                    client_key=key_name(client), texts=record.get("texts"))
        return response

    def endpoint(handler: Callable[..., dict]) -> Callable:
        async def post(request: Request) -> JSONResponse:
            return await answer(request, handler)
        return post

    return Starlette(routes=[Route("/v1/info", info, methods=["GET"]),
                             Route("/v1/usage", usage, methods=["GET"]),
                             *(Route(path, endpoint(handler), methods=["POST"])
                               for path, handler in service.routes().items())])


def log_request(request: Request, service: ModelService, *, status: int, body_bytes: int,
                images: int | None, start: float, error: str | None = None,
                client_key: str | None = None, texts: int | None = None) -> None:
    """One JSON line on :data:`request_log` for one request.

    Fields: ``time`` (UTC, ISO 8601), ``client`` (address), ``method``, ``path``, ``status``,
    ``body_bytes``, ``images`` (null when the request was refused before it was parsed),
    ``ms``, ``queries_used`` (the service's total), ``client_key`` (the API key's name; null
    without keys or before the key was recognised), ``texts`` (requests of texts only: how
    many) and ``error`` (failures only). No header is logged: an ``Authorization`` header or
    API key never reaches the log.
    """
    if not request_log.isEnabledFor(logging.INFO):
        return
    entry: dict = {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                   "client": request.client.host if request.client else None,
                   "method": request.method, "path": request.url.path, "status": status,
                   "body_bytes": body_bytes, "images": images,
                   "ms": round((time.perf_counter() - start) * 1000, 2),
                   "queries_used": service.queries_used, "client_key": client_key}
    if texts is not None:
        entry["texts"] = texts
    if error is not None:
        entry["error"] = error
    request_log.info(json.dumps(entry, separators=(",", ":")))


def run_server(service: ModelService, host: str = "127.0.0.1", port: int = 8080, *,
               log_requests: bool = True) -> None:
    """Serve until interrupted (uvicorn, one process, concurrent requests).

    Args:
        service: what to serve.
        host, port: where to listen.
        log_requests: write the per-request JSON lines (:func:`log_request`) to stderr.
    """
    import uvicorn

    if log_requests and not request_log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        request_log.addHandler(handler)
        request_log.propagate = False
    request_log.setLevel(logging.INFO if log_requests else logging.WARNING)
    uvicorn.run(create_app(service), host=host, port=port, log_level="warning")


def config_dict(config: ServeConfig) -> dict:
    return {k: (None if isinstance(v, float) and math.isinf(v) else v)
            for k, v in asdict(config).items()}


def __getattr__(name: str) -> Any:
    """``ImageTextService`` lives in :mod:`leakprobe.serving.image_text` (imported on use)."""
    if name == "ImageTextService":
        from leakprobe.serving.image_text import ImageTextService

        return ImageTextService
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
