"""Models behind HTTP (``leakprobe serve`` or any service speaking its protocol).

:class:`HTTPTarget` is what every family's client shares: it reads ``GET /v1/info`` (and
refuses a service of another family), batches images, retries transient failures
(connection errors, timeouts, 429 and 5xx answers) with exponential backoff, honours
``Retry-After``, stops at once when the server's budget is exhausted (403), counts its
queries, and hands every answer to the family's check. Images travel losslessly as base64
float32 ``.npy`` by default, so an audit through a server gives the same numbers as against
the local model file.

The family clients expose their own family's query methods only: :class:`HTTPEncoder`
(``embed``, ``tokens``), :class:`HTTPTranslator` (``translate``), :class:`HTTPCaptioner`
(``caption``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import ClassVar, TypeVar

import httpx
import numpy as np
import torch

from leakprobe.errors import BudgetExceededError, LeakprobeError
from leakprobe.serving.wire import decode_npy, encode_npy, encode_png
from leakprobe.targets.base import QueryCounter, check_images, resize

TRANSIENT_STATUS = {429, 500, 502, 503, 504}

Piece = TypeVar("Piece")


class HTTPTarget:
    """The part of every HTTP client that does not depend on the model family.

    A family's client sets ``kind`` (what ``/v1/info`` must declare), ``route`` (where its
    queries go), optionally ``resizes_queries``, reads its own fields of ``/v1/info`` in
    :meth:`_read_info`, builds a request in :meth:`_payload` and checks each answer in the
    ``read`` function it passes to :meth:`query`.

    Args:
        url: base URL, e.g. ``http://127.0.0.1:8080``.
        batch_size: images per request (capped by the server's ``max_batch``).
        timeout: seconds per request.
        retries: attempts after the first for transient failures.
        backoff: first retry delay in seconds (doubled each time).
        encoding: ``npy`` (lossless float32) or ``png`` (8-bit).
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
        encoding: str = "npy",
        budget: int | None = None,
        image_size: int | None = None,
    ) -> None:
        if encoding not in ("npy", "png"):
            raise LeakprobeError(f"encoding must be 'npy' or 'png', got {encoding!r}")
        self.url = url.rstrip("/")
        self.name = self.url
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.encoding = encoding
        self.counter = QueryCounter(budget)
        self.device = torch.device("cpu")
        self.client = httpx.Client(timeout=timeout)
        info = self._request("GET", "/v1/info")
        if info.get("kind") != self.kind:
            raise LeakprobeError(f"{self.url} serves a {info.get('kind')!r}, not a {self.kind}")
        self.info = info
        self.input_size = int(image_size or info.get("input_size") or 32)
        self._read_info(info)
        self.batch_size = max(1, min(batch_size, int(info.get("max_batch") or batch_size)))
        self.server_queries_used = int(info.get("queries_used") or 0)

    @property
    def queries(self) -> int:
        return self.counter.used

    def _read_info(self, info: dict) -> None:
        """Keep the family's own fields of ``/v1/info`` (none by default)."""

    def _request(self, method: str, path: str, payload: dict | None = None) -> dict:
        delay = self.backoff
        last = ""
        for attempt in range(self.retries + 1):
            try:
                resp = self.client.request(method, self.url + path, json=payload)
            except (httpx.TransportError, httpx.TimeoutException) as e:
                last = f"{type(e).__name__}: {e}"
            else:
                if resp.status_code == 200:
                    try:
                        return resp.json()
                    except ValueError as e:
                        raise LeakprobeError(f"{self.url}{path}: answer is not JSON") from e
                message = _error_message(resp)
                if resp.status_code == 403:
                    raise BudgetExceededError(f"{self.url}: {message}")
                if resp.status_code not in TRANSIENT_STATUS:
                    raise LeakprobeError(f"{self.url}{path}: HTTP {resp.status_code}: {message}")
                last = f"HTTP {resp.status_code}: {message}"
                delay = max(delay, _retry_after(resp))
            if attempt < self.retries:
                time.sleep(delay)
                delay *= 2
        raise LeakprobeError(f"{self.url}{path}: failed after {self.retries + 1} attempts "
                             f"({last})")

    def _payload(self, chunk: torch.Tensor) -> dict:
        """The request body for one chunk: base64 ``.npy`` or base64 PNGs."""
        if self.encoding == "npy":
            return {"array": encode_npy(chunk)}
        return {"images": [encode_png(x) for x in chunk]}

    def query(
        self, images: torch.Tensor, read: Callable[[dict, int], Piece], **options: object
    ) -> list[Piece]:
        """Send ``images`` to ``route`` in batches; one checked piece per batch.

        The images are checked, resized when the family asks for it and paid for in full
        before the first request.

        Args:
            images: the (B, 3, H, W) query.
            read: checks one answer for ``n`` images and returns the piece kept.
            options: passed to :meth:`_payload` (e.g. ``tokens=True``).
        """
        check_images(images)
        images = images.float()
        if self.resizes_queries:
            images = resize(images, self.input_size)
        self.counter.charge(images.shape[0])
        pieces = []
        for chunk in images.split(self.batch_size):
            answer = self._request("POST", self.route, self._payload(chunk, **options))
            self.server_queries_used = int(answer.get("queries_used", 0))
            pieces.append(read(answer, chunk.shape[0]))
        return pieces

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

    def _payload(self, chunk: torch.Tensor, tokens: bool = False) -> dict:
        if self.encoding == "npy":
            return {"array": encode_npy(chunk), "tokens": tokens, "response_encoding": "npy"}
        return {"images": [encode_png(x) for x in chunk], "tokens": tokens}

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

    Images always travel as ``.npy``; every answer must be finite images within [0, 1].
    """

    kind = "image2image"
    route = "/v1/translate"

    def _read_info(self, info: dict) -> None:
        self.out_channels = int(info.get("out_channels") or 0)

    def _payload(self, chunk: torch.Tensor) -> dict:
        return {"array": encode_npy(chunk)}

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


def _retry_after(resp: httpx.Response) -> float:
    """The server's ``Retry-After`` in seconds (0 when absent or not a number)."""
    try:
        return float(resp.headers.get("retry-after", 0))
    except ValueError:
        return 0.0
