"""Models behind HTTP (``leakprobe serve`` or any service speaking its protocol).

:class:`HTTPTarget` is what every family's client shares: it reads ``GET /v1/info`` (and
refuses a service of another family), batches images, retries transient failures
(connection errors, timeouts, 429 and 5xx answers) with exponential backoff, honours
``Retry-After``, stops at once when the server's budget is exhausted (403), counts its
queries, and hands every answer to the family's check.

Request size: every request stays under the body limit the server announces at ``/v1/info``
(``max_body_bytes``, with a margin; 64 MiB, the server's default, when a server does not
announce one) and under its ``max_batch``, whatever ``batch_size`` asked: the client
computes how many images fit, measures each encoded body, and splits any that would still
be too large. An image that cannot fit alone is a clear error naming the server's
``--max-body-mb``.

Wire format (``encoding``, see :mod:`leakprobe.serving.wire`): by default (``auto``) images
already on the 8-bit grid (pixels ``k / 255``: images decoded from files, the steal's
quantised views) travel as uint8 levels, a quarter of float32's bytes and exact; any other
image travels as float32, also exact. So an audit or a steal through a server gives the
same numbers as against the local model file. ``uint8`` sends every image as 8-bit levels
(compact always; a pixel off the grid moves by at most 1/510, and since every query of a
run goes through the same client, members and non-members are treated alike); ``npy``
always float32; ``png`` 8-bit PNGs.

API keys: when the environment variable ``LEAKPROBE_API_KEY`` is set, every request carries
``Authorization: Bearer $LEAKPROBE_API_KEY`` (a server started with ``leakprobe serve
--api-keys`` needs it). The key never appears in an error, a log or a ``repr``. A 401 is a
clear error saying to set the variable (or that the server rejected it); a 429 that carries
``remaining`` is the key's budget spent, an error at once (not retried), like the service's
own budget (403).

The family clients expose their own family's query methods only: :class:`HTTPEncoder`
(``embed``, ``tokens``), :class:`HTTPTranslator` (``translate``), :class:`HTTPCaptioner`
(``caption``), :class:`HTTPImageText` (``embed_images``, ``embed_texts``).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from typing import ClassVar, TypeVar

import httpx
import numpy as np
import torch

from leakprobe.errors import BudgetExceededError, LeakprobeError
from leakprobe.serving.wire import (
    NPY_HEADER_BYTES,
    decode_npy,
    dequantise,
    encode_npy,
    encode_png,
    encode_uint8,
    on_grid,
    quantise,
    text_chunks,
)
from leakprobe.targets.base import QueryCounter, check_images, resize
from leakprobe.targets.image_text import check_texts

TRANSIENT_STATUS = {429, 500, 502, 503, 504}
#: The environment variable holding the API key sent as ``Authorization: Bearer KEY``.
API_KEY_ENV = "LEAKPROBE_API_KEY"


class RequestTooLarge(LeakprobeError):
    """A 413 answer: the request was over a limit of the server (or of a proxy before it)."""
#: The body limit assumed of a server that does not announce one (``leakprobe serve``'s
#: default before it did).
DEFAULT_MAX_BODY_BYTES = 64 * 2**20
#: Client-side encodings (``HTTPTarget(encoding=...)``).
CLIENT_ENCODINGS = ("auto", "uint8", "npy", "png")

Piece = TypeVar("Piece")


class HTTPTarget:
    """The part of every HTTP client that does not depend on the model family.

    A family's client sets ``kind`` (what ``/v1/info`` must declare), ``route`` (where its
    queries go), optionally ``resizes_queries``, reads its own fields of ``/v1/info`` in
    :meth:`_read_info`, builds a request in :meth:`_payload` and checks each answer in the
    ``read`` function it passes to :meth:`query`.

    Args:
        url: base URL, e.g. ``http://127.0.0.1:8080``.
        batch_size: images per request at most (capped by the server's ``max_batch`` and by
            what fits its ``max_body_bytes``).
        timeout: seconds per request.
        retries: attempts after the first for transient failures.
        backoff: first retry delay in seconds (doubled each time).
        encoding: ``auto`` (uint8 for images on the 8-bit grid, else float32: exact,
            compact where it can be), ``uint8`` (always 8-bit levels: <= 1/510 per pixel),
            ``npy`` (always float32) or ``png`` (8-bit PNGs).
        budget: local query budget on top of the server's.
        image_size: override the server's declared input size.
    """

    kind: ClassVar[str] = ""
    route: ClassVar[str] = ""
    resizes_queries: ClassVar[bool] = False

    def __init__(
        self,
        url: str,
        batch_size: int = 64,
        timeout: float = 60.0,
        retries: int = 4,
        backoff: float = 0.5,
        encoding: str = "auto",
        budget: int | None = None,
        image_size: int | None = None,
    ) -> None:
        if encoding not in CLIENT_ENCODINGS:
            raise LeakprobeError(f"encoding must be one of {', '.join(CLIENT_ENCODINGS)}, got "
                                 f"{encoding!r}")
        self.url = url.rstrip("/")
        self.name = self.url
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.encoding = encoding
        self.counter = QueryCounter(budget)
        self.device = torch.device("cpu")
        key = os.environ.get(API_KEY_ENV, "").strip()
        self._keyed = bool(key)
        self.client = httpx.Client(
            timeout=timeout, headers={"Authorization": f"Bearer {key}"} if key else None)
        info = self._request("GET", "/v1/info")
        if info.get("kind") != self.kind:
            raise LeakprobeError(f"{self.url} serves a {info.get('kind')!r}, not a {self.kind}")
        self.info = info
        self.input_size = int(image_size or info.get("input_size") or 32)
        self._read_info(info)
        self.batch_size = max(1, min(batch_size, int(info.get("max_batch") or batch_size)))
        self.max_body_bytes = int(info.get("max_body_bytes") or DEFAULT_MAX_BODY_BYTES)
        side = info.get("max_image_side")
        self.max_image_side = int(side) if isinstance(side, int) and side > 0 else None
        # a server that lists no encodings predates uint8 arrays: float32 .npy and PNG only
        self.server_encodings = set(info.get("encodings") or ("npy-float32", "png"))
        self.server_queries_used = int(info.get("queries_used") or 0)
        self.requests = 0  # POSTs answered (after retries), for tests and logs

    @property
    def queries(self) -> int:
        return self.counter.used

    def _read_info(self, info: dict) -> None:
        """Keep the family's own fields of ``/v1/info`` (none by default)."""

    def _request(self, method: str, path: str, body: bytes | None = None) -> dict:
        delay = self.backoff
        last = ""
        headers = {"content-type": "application/json"} if body is not None else None
        for attempt in range(self.retries + 1):
            try:
                resp = self.client.request(method, self.url + path, content=body,
                                           headers=headers)
            except (httpx.TransportError, httpx.TimeoutException) as e:
                last = f"{type(e).__name__}: {e}"
            else:
                if resp.status_code == 200:
                    try:
                        return resp.json()
                    except ValueError as e:
                        raise LeakprobeError(f"{self.url}{path}: answer is not JSON") from e
                message = _error_message(resp)
                if resp.status_code == 401:
                    raise LeakprobeError(
                        f"{self.url}: the server rejected the API key in ${API_KEY_ENV}"
                        if self._keyed else
                        f"{self.url}: the server needs an API key: set {API_KEY_ENV}")
                if resp.status_code == 403:
                    raise BudgetExceededError(f"{self.url}: {message}")
                spent = _key_budget(resp)
                if spent is not None:
                    raise BudgetExceededError(
                        f"{self.url}: the API key's query budget allows {spent['remaining']} "
                        f"more queries ({spent['used']} of {spent['budget']} used): "
                        f"{message}")
                if resp.status_code == 413:
                    raise RequestTooLarge(f"{self.url}{path}: HTTP 413: {message}")
                if resp.status_code not in TRANSIENT_STATUS:
                    raise LeakprobeError(f"{self.url}{path}: HTTP {resp.status_code}: {message}")
                last = f"HTTP {resp.status_code}: {message}"
                delay = max(delay, _retry_after(resp))
            if attempt < self.retries:
                time.sleep(delay)
                delay *= 2
        raise LeakprobeError(f"{self.url}{path}: failed after {self.retries + 1} attempts "
                             f"({last})")

    def _options(self, **options: object) -> dict:
        """The family's request fields besides the images (none by default)."""
        return dict(options)

    def _wire(self, images: torch.Tensor) -> str:
        """How ``images`` travel: ``npy-uint8``, ``npy-float32`` or ``png``.

        ``auto`` picks uint8 only when it is exact (every pixel on the 8-bit grid) and the
        server decodes it; ``uint8`` quantises (see :meth:`query`) and falls back to float32
        for a server that predates uint8 arrays (the quantised values, sent exactly).
        """
        if self.encoding == "png":
            return "png"
        if self.encoding == "npy" or "npy-uint8" not in self.server_encodings:
            return "npy-float32"
        return "npy-uint8" if self.encoding == "uint8" or on_grid(images) else "npy-float32"

    def _payload(self, chunk: torch.Tensor, wire: str, **options: object) -> dict:
        """The request body for one chunk: a base64 ``.npy`` array or base64 PNGs."""
        if wire == "png":
            images: dict = {"images": [encode_png(x) for x in chunk]}
        elif wire == "npy-uint8":
            images = {"array": encode_uint8(chunk)}
        else:
            images = {"array": encode_npy(chunk)}
        return {**images, **self._options(**options)}

    def images_per_request(self, shape: tuple[int, ...], wire: str) -> int:
        """Images of ``shape[1:]`` that fit one request under the server's limits.

        The encoded size is estimated (base64 of the ``.npy`` or PNG bytes, plus the JSON
        around them) against ``max_body_bytes`` less a margin (1/64 of it plus 4 KiB); the
        result is capped by ``batch_size`` (itself capped by the server's ``max_batch``).
        0 when not even one image fits.
        """
        pixels = math.prod(shape[1:])
        if wire == "png":  # incompressible worst case: raw rows, a filter byte each, chunks
            per_image = (pixels + shape[-2] + 1024) * 4 / 3 + 4
        else:
            per_image = pixels * (1 if wire == "npy-uint8" else 4) * 4 / 3
        room = self.max_body_bytes - self.max_body_bytes // 64 - 4096 - NPY_HEADER_BYTES * 4 / 3
        return max(0, min(self.batch_size, int(room // per_image)))

    def _too_large(self, shape: tuple[int, ...], size: int | None = None) -> LeakprobeError:
        needs = f"makes a request of {size} bytes" if size else "does not fit one request"
        return LeakprobeError(
            f"{self.url}: one {'x'.join(map(str, shape))} image {needs}, over the server's "
            f"limit of {self.max_body_bytes} bytes (raise it with leakprobe serve "
            "--max-body-mb, or send smaller images)")

    def query(
        self, images: torch.Tensor, read: Callable[[dict, int], Piece], **options: object
    ) -> list[Piece]:
        """Send ``images`` to ``route`` in requests sized to the server; checked pieces.

        The images are checked, resized when the family asks for it, checked against the
        server's ``max_image_side`` and paid for in full before the first request. With
        ``encoding="uint8"`` they are quantised first (<= 1/510 per pixel). Requests hold
        :meth:`images_per_request` images; a body that still measures over
        ``max_body_bytes`` is split in halves until it fits, and so is one answered 413 (a
        proxy in front may be stricter than the server; a refused request is not charged).

        Args:
            images: the (B, 3, H, W) query.
            read: checks one answer for ``n`` images and returns the piece kept.
            options: passed to :meth:`_options` (e.g. ``tokens=True``).
        """
        check_images(images)
        images = images.float()
        if self.resizes_queries:
            images = resize(images, self.input_size)
        side = max(images.shape[-2:])
        if self.max_image_side is not None and side > self.max_image_side:
            raise LeakprobeError(f"{self.url}: images of side {side} exceed the server's "
                                 f"max_image_side {self.max_image_side} (leakprobe serve "
                                 "--max-image-side)")
        if self.encoding == "uint8":
            images = dequantise(quantise(images))
        wire = self._wire(images)
        per_request = self.images_per_request(tuple(images.shape), wire)
        if per_request == 0:
            raise self._too_large(tuple(images.shape[1:]))
        self.counter.charge(images.shape[0], progress=False)  # the bar moves per answer
        pieces: list[Piece] = []
        start = 0
        while start < images.shape[0]:  # batch_size shrinks if a request is answered 413
            per_request = max(1, self.images_per_request(tuple(images.shape), wire))
            self._send(images[start:start + per_request], wire, read, options, pieces)
            start += per_request
        return pieces

    def _send(self, chunk: torch.Tensor, wire: str, read: Callable[[dict, int], Piece],
              options: dict, pieces: list[Piece]) -> None:
        """POST ``chunk`` (split in halves while its body is over the limit); keep pieces."""
        body = json.dumps(self._payload(chunk, wire, **options)).encode()
        if len(body) > self.max_body_bytes:
            if chunk.shape[0] == 1:
                raise self._too_large(tuple(chunk.shape[1:]), len(body))
            half = (chunk.shape[0] + 1) // 2
            for part in chunk.split(half):
                self._send(part, wire, read, options, pieces)
            return
        try:
            answer = self._request("POST", self.route, body)
        except RequestTooLarge:
            if chunk.shape[0] == 1:
                raise
            # a stricter limit than announced (e.g. a proxy in front): halve, and remember
            half = (chunk.shape[0] + 1) // 2
            self.batch_size = min(self.batch_size, half)
            for part in chunk.split(half):
                self._send(part, wire, read, options, pieces)
            return
        self.requests += 1
        self.server_queries_used = int(answer.get("queries_used", 0))
        pieces.append(read(answer, chunk.shape[0]))
        self.counter.answered(chunk.shape[0])

    def _check_array(
        self, value: object, n: int, ndim: int, what: str, declared_width: int = 0
    ) -> torch.Tensor:
        """``value`` as a finite float32 tensor of ``ndim`` dims and ``n`` rows.

        ``declared_width``: the size of dim 1 the server declared (0: not checked).
        """
        try:
            arr = np.asarray(value, dtype=np.float32)
        except (TypeError, ValueError) as e:
            raise LeakprobeError(f"{self.url}: {what} in the answer are not numbers") from e
        if arr.ndim != ndim or arr.shape[0] != n:
            raise LeakprobeError(f"{self.url}: expected {n} {what} of {ndim} dims, got "
                                 f"shape {arr.shape}")
        if declared_width and arr.shape[1] != declared_width:
            raise LeakprobeError(f"{self.url}: {what} of size {arr.shape[1]}, the server "
                                 f"declared {declared_width}")
        if not np.isfinite(arr).all():
            raise LeakprobeError(f"{self.url}: the answer contains NaN/inf {what}")
        return torch.from_numpy(arr)


class HTTPEncoder(HTTPTarget):
    """:class:`~leakprobe.targets.encoder.Encoder` behind ``/v1/embed`` (a black box).

    Every answer is checked: shape, the embedding size the server declared, NaN.
    """

    kind = "encoder"
    route = "/v1/embed"

    def _read_info(self, info: dict) -> None:
        self.embed_dim = int(info.get("embed_dim") or 0)
        self.has_tokens = bool(info.get("tokens"))
        declared = info.get("tokens_in_embedding_space")  # see ModuleEncoder; None: undeclared
        self.tokens_in_embedding_space = declared if isinstance(declared, bool) else None

    def _options(self, tokens: bool = False) -> dict:  # type: ignore[override]
        return {"tokens": tokens, "response_encoding": "npy"}

    def _read_embeddings(self, answer: dict, n: int) -> torch.Tensor:
        return self._check_array(_field(answer, "embeddings"), n, 2, "embeddings",
                                 declared_width=self.embed_dim)

    def _read_tokens(self, answer: dict, n: int) -> torch.Tensor:
        return self._check_array(_field(answer, "tokens"), n, 3, "tokens")

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat(self.query(images, self._read_embeddings, tokens=False))

    def tokens(self, images: torch.Tensor) -> torch.Tensor | None:
        if not self.has_tokens:
            return None
        return torch.cat(self.query(images, self._read_tokens, tokens=True))


class HTTPTranslator(HTTPTarget):
    """:class:`~leakprobe.targets.image2image.ImageToImage` behind ``/v1/translate``.

    Images travel as ``.npy`` (``encoding="png"`` is read as ``auto``); every answer must be
    finite images within [0, 1].
    """

    kind = "image2image"
    route = "/v1/translate"

    def _read_info(self, info: dict) -> None:
        self.out_channels = int(info.get("out_channels") or 0)

    def _wire(self, images: torch.Tensor) -> str:
        wire = super()._wire(images)
        if wire != "png":
            return wire
        return "npy-uint8" if "npy-uint8" in self.server_encodings and on_grid(images) \
            else "npy-float32"

    def _read_outputs(self, answer: dict, n: int) -> torch.Tensor:
        out = self._check_array(_field(answer, "outputs"), n, 4, "outputs")
        if out.min() < 0 or out.max() > 1:
            raise LeakprobeError(f"{self.url}: outputs outside [0, 1]")
        return out

    def translate(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat(self.query(images, self._read_outputs))


class HTTPCaptioner(HTTPTarget):
    """:class:`~leakprobe.targets.captioner.Captioner` behind ``/v1/caption`` (a black box).

    Queries are resized to the server's ``input_size`` before they are sent (as the local
    targets do), counted, and every answer is checked to hold one string per image.
    """

    kind = "captioner"
    route = "/v1/caption"
    resizes_queries = True

    def _read_captions(self, answer: dict, n: int) -> list[str]:
        out = answer.get("captions")
        if not isinstance(out, list) or len(out) != n or not all(isinstance(c, str) for c in out):
            got = f"a list of {len(out)}" if isinstance(out, list) else type(out).__name__
            raise LeakprobeError(f"{self.url}: expected {n} captions (strings), got {got}")
        return out

    def caption(self, images: torch.Tensor) -> list[str]:
        """One caption per image, from the service in batches."""
        return [c for part in self.query(images, self._read_captions) for c in part]


class HTTPImageText(HTTPTarget):
    """:class:`~leakprobe.targets.image_text.ImageTextModel` behind ``/v1/embed_images`` and
    ``/v1/embed_texts`` (a black box; ``leakprobe serve image-text``).

    Images are resized to the server's ``input_size`` before they are sent (as the local
    target does); texts go as JSON in requests within the server's ``max_texts``,
    ``max_text_chars`` and body limit. Each image and each text is one query, all of a call
    paid for (``budget``) before its first request. Every answer is checked (shape, the
    embedding size the server declared, NaN) and L2-normalised where the server did not.

    Args:
        url: base URL, e.g. ``http://127.0.0.1:8080``.
        batch_size: images (or texts) per request at most (capped by the server's limits).
        budget: local budget of images and texts on top of the server's.
        image_size: override the server's declared input size.
        timeout, retries, backoff, encoding: as for :class:`HTTPTarget`.
    """

    kind = "image-text"
    route = "/v1/embed_images"
    text_route = "/v1/embed_texts"
    resizes_queries = True

    def __init__(
        self,
        url: str,
        *,
        batch_size: int = 64,
        budget: int | None = None,
        image_size: int | None = None,
        timeout: float = 60.0,
        retries: int = 4,
        backoff: float = 0.5,
        encoding: str = "auto",
    ) -> None:
        super().__init__(url, batch_size=batch_size, timeout=timeout, retries=retries,
                         backoff=backoff, encoding=encoding, budget=budget,
                         image_size=image_size)

    def _read_info(self, info: dict) -> None:
        self.embed_dim = int(info.get("embed_dim") or 0)
        max_texts, max_chars = info.get("max_texts"), info.get("max_text_chars")
        self.max_texts = max_texts if isinstance(max_texts, int) and max_texts > 0 else None
        self.max_text_chars = max_chars if isinstance(max_chars, int) and max_chars > 0 \
            else None

    def _options(self) -> dict:  # type: ignore[override]
        return {"response_encoding": "npy"}

    def _read_embeddings(self, answer: dict, n: int) -> torch.Tensor:
        emb = self._check_array(_field(answer, "embeddings"), n, 2, "embeddings",
                                declared_width=self.embed_dim)
        norms = emb.norm(dim=1, keepdim=True)
        if n and not bool((norms > 0).all()):
            raise LeakprobeError(f"{self.url}: the answer holds an all-zero embedding")
        if bool(((norms - 1).abs() > 1e-4).any()):  # a server that does not normalise
            emb = emb / norms
        return emb

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, D) L2-normalised float32, from the service."""
        check_images(images)
        if images.shape[0] == 0:
            return torch.empty(0, self.embed_dim)
        return torch.cat(self.query(images, self._read_embeddings))

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        """B strings -> (B, D) L2-normalised float32, from the service in requests sized to
        its limits; all of them paid for before the first request."""
        texts = check_texts(texts)
        room = self.max_body_bytes - self.max_body_bytes // 64 - 4096
        per_request = min(self.batch_size, self.max_texts or self.batch_size)
        chunks = text_chunks(texts, max_texts=per_request, max_chars=self.max_text_chars,
                             max_bytes=room)
        self.counter.charge(len(texts), progress=False)
        pieces: list[torch.Tensor] = []
        for chunk in chunks:
            self._send_texts(chunk, pieces)
        return torch.cat(pieces) if pieces else torch.empty(0, self.embed_dim)

    def _send_texts(self, chunk: list[str], pieces: list[torch.Tensor]) -> None:
        """POST ``chunk`` to :attr:`text_route` (halved while answered 413); keep pieces."""
        body = json.dumps({"texts": chunk, **self._options()}).encode()
        try:
            answer = self._request("POST", self.text_route, body)
        except RequestTooLarge:
            if len(chunk) == 1:
                raise
            half = (len(chunk) + 1) // 2  # a stricter limit than announced (a proxy)
            self.batch_size = min(self.batch_size, half)
            for start in range(0, len(chunk), half):
                self._send_texts(chunk[start:start + half], pieces)
            return
        self.requests += 1
        self.server_queries_used = int(answer.get("queries_used", 0))
        pieces.append(self._read_embeddings(answer, len(chunk)))
        self.counter.answered(len(chunk))


def _field(answer: dict, name: str) -> object:
    """``name`` from an answer, decoding the ``name_npy`` form when the server sent it."""
    if answer.get(f"{name}_npy") is not None:
        return decode_npy(answer[f"{name}_npy"])
    return answer.get(name)


def _error_message(resp: httpx.Response) -> str:
    try:
        return str(resp.json().get("error", resp.text[:200]))
    except ValueError:
        return resp.text[:200]


def _key_budget(resp: httpx.Response) -> dict | None:
    """A 429 for a spent key budget (its JSON body carries ``remaining``), else None."""
    if resp.status_code != 429:
        return None
    try:
        body = resp.json()
    except ValueError:
        return None
    if not isinstance(body, dict) or not isinstance(body.get("remaining"), int):
        return None
    return {k: body.get(k) for k in ("remaining", "budget", "used")}


def _retry_after(resp: httpx.Response) -> float:
    """The server's ``Retry-After`` in seconds (0 when absent or not a number)."""
    try:
        return float(resp.headers.get("retry-after", 0))
    except ValueError:
        return 0.0
