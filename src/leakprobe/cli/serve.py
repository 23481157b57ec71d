"""``leakprobe serve encoder|image2image|captioner|image-text``: a model behind an HTTP API.

The service announces its limits at ``/v1/info`` (``max_batch``, ``max_body_bytes``,
``max_image_side``) and leakprobe's clients size their requests under them; a request over a
limit is answered 413 naming the option here that sets it. One JSON line per request goes to
stderr (``--no-log-requests`` turns it off); headers, and so keys, are never logged.

``--api-keys FILE`` turns on API keys (:mod:`leakprobe.serving.keys`): one key a line
(``KEY``, ``NAME:KEY`` or ``NAME:KEY:BUDGET``), usage kept in ``--state`` (default
``FILE.state.json``), every key's usage readable with the key in ``--admin-key FILE``.
Without it anyone who reaches the port may query, and the start-up line says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from leakprobe.cli.options import (
    Device,
    InputSize,
    ModelArch,
    Seed,
    Threads,
    model_option,
    use_threads,
)
from leakprobe.errors import LeakprobeError

app = typer.Typer(no_args_is_help=True, help="Serve a model over HTTP.")

SERVICE_PANEL = "Service and limits"
DEFENCE_PANEL = "Answer defences"
KEYS_PANEL = "API keys"

Host = Annotated[str, typer.Option(help="Address to listen on.",
                                   rich_help_panel=SERVICE_PANEL)]
Port = Annotated[int, typer.Option(help="Port to listen on.", rich_help_panel=SERVICE_PANEL)]
MaxQueries = Annotated[int | None, typer.Option(
    help="Total images the service will answer (default: no limit).",
    rich_help_panel=SERVICE_PANEL)]
Rate = Annotated[float | None, typer.Option(help="Requests per second per client.",
                                            rich_help_panel=SERVICE_PANEL)]
MaxBatch = Annotated[int, typer.Option(
    min=1, help="Images per request (announced at /v1/info; clients send no more).",
    rich_help_panel=SERVICE_PANEL)]
MaxBodyMB = Annotated[float, typer.Option(
    min=0.01, rich_help_panel=SERVICE_PANEL,
    help="Request body limit in MiB (announced at /v1/info; clients size their requests "
    "under it; 224-px images take 0.19 MiB each as uint8, 0.77 as float32).")]
MaxImageSide = Annotated[int, typer.Option(min=1, help="Largest accepted image side.",
                                           rich_help_panel=SERVICE_PANEL)]
MaxTexts = Annotated[int, typer.Option(
    min=1, help="Texts per request to /v1/embed_texts (announced at /v1/info).",
    rich_help_panel=SERVICE_PANEL)]
MaxTextChars = Annotated[int, typer.Option(
    min=1, rich_help_panel=SERVICE_PANEL,
    help="Characters of a request's texts in all (announced at /v1/info).")]
NoLogRequests = Annotated[bool, typer.Option(
    "--no-log-requests", rich_help_panel=SERVICE_PANEL,
    help="Do not write the JSON line per request to stderr (client, path, status, body bytes, "
    "images, ms; never a header or key).")]
ApiKeys = Annotated[Path | None, typer.Option(
    "--api-keys", rich_help_panel=KEYS_PANEL,
    # no "NAME:KEY:BUDGET" here: rich help would show ":KEY:" as an emoji
    help="File of API keys, one a line: the key, or NAME and key, or NAME, key and BUDGET, "
    "joined by colons (e.g. alice:s3cret:50000; BUDGET: images answered, ever). Every /v1/* "
    "request then needs 'Authorization: Bearer "
    "KEY' (clients: set LEAKPROBE_API_KEY). Default: no keys, anyone who reaches the port "
    "may query.")]
StateFile = Annotated[Path | None, typer.Option(
    "--state", rich_help_panel=KEYS_PANEL,
    help="Where per-key usage (queries, first/last seen, B4B coverage) is kept "
    "across restarts, written atomically; never a key (default: API_KEYS.state.json).")]
AdminKey = Annotated[Path | None, typer.Option(
    "--admin-key", rich_help_panel=KEYS_PANEL,
    help="File holding one key that reads every key's usage at /v1/usage "
    "(and queries nothing).")]


def _local(model: str) -> str:
    if model.startswith(("http://", "https://")):
        raise LeakprobeError("serve needs a local model, not a URL")
    return model


def _serve(family_name: str, model: str, config_options: dict, *, host: str, port: int,
           arch: str | None, image_size: int | None, device: str, banner: str = "",
           log_requests: bool = True, api_keys: Path | None = None, state: Path | None = None,
           admin_key: Path | None = None) -> None:
    """Load ``--model`` as a target of the family and serve it with the family's service.

    The keys, the state file and the answer defence are read and checked before the model
    is loaded.
    """
    from leakprobe.serving.keys import Clients
    from leakprobe.serving.server import ServeConfig, answer_defence, run_server
    from leakprobe.targets.families import family, load_target

    config = ServeConfig(**config_options)
    defence = answer_defence(config)
    clients = Clients.from_files(api_keys=api_keys, state=state, admin_key=admin_key)
    target = load_target(model, family=family_name, arch=arch, image_size=image_size,
                         device=device)
    service = family(family_name).service(target, config, clients=clients)
    url = f"http://{host}:{port}"
    typer.echo(f"serving {model} at {url}{banner.format(target=target)}; "
               f"requests up to {config.max_batch} images and "
               f"{config.max_body_bytes / 2**20:g} MiB"
               + ("" if defence.is_identity else f"; defence {defence.spec}"), err=True)
    if clients.keyed:
        typer.echo(f"{len(clients.clients)} API keys from {api_keys}; usage kept in "
                   f"{clients.state_path}" + ("; admin key on" if clients.admin else ""),
                   err=True)
    else:
        typer.echo(f"no --api-keys: anyone who can reach {url} can query", err=True)
    run_server(service, host, port, log_requests=log_requests)


@app.command("encoder")
def serve_encoder_cmd(
    *,
    model: Annotated[str, model_option("encoder", url=False)],
    arch: ModelArch = None,
    image_size: InputSize = None,
    host: Host = "127.0.0.1",
    port: Port = 8080,
    max_queries: MaxQueries = None,
    rate: Rate = None,
    max_batch: MaxBatch = 256,
    max_body_mb: MaxBodyMB = 64.0,
    max_image_side: MaxImageSide = 512,
    no_log_requests: NoLogRequests = False,
    noise: Annotated[float, typer.Option(
        rich_help_panel=DEFENCE_PANEL, help="Gaussian noise std added to embeddings.")] = 0.0,
    top_k: Annotated[int | None, typer.Option(
        rich_help_panel=DEFENCE_PANEL, help="Return only the k largest coordinates.")] = None,
    round_decimals: Annotated[int | None, typer.Option(
        rich_help_panel=DEFENCE_PANEL, help="Round embeddings to N decimals.")] = None,
    defence: Annotated[str | None, typer.Option(
        rich_help_panel=DEFENCE_PANEL,
        help="Answer defence: none, noise:STD, round:DECIMALS, topk:K, b4b or "
        "b4b:NAME=VALUE,... (NAME: lambda, alpha, beta, transform; the paper's 1e-6, 1, 80, "
        "none by default; transform: affine, shuffle or affine-shuffle, per key). B4B adds "
        "noise growing with each client's coverage of the embedding space. Join with +, "
        "e.g. b4b+round:3.")] = None,
    api_keys: ApiKeys = None,
    state: StateFile = None,
    admin_key: AdminKey = None,
    seed: Seed = 0,
    device: Device = "auto",
    threads: Threads = "auto",
) -> None:
    """Serve an encoder at http://HOST:PORT (/v1/info, /v1/embed, /v1/usage) until
    interrupted."""
    use_threads(threads)
    config = dict(max_batch=max_batch, max_body_bytes=int(max_body_mb * 2**20),
                  max_image_side=max_image_side, max_queries=max_queries, rate=rate,
                  noise=noise, top_k=top_k, round_decimals=round_decimals, seed=seed,
                  defence=defence)
    _serve("encoder", _local(model), config, host=host, port=port, arch=arch,
           image_size=image_size, device=device, log_requests=not no_log_requests,
           banner=" (input {target.input_size}, embedding {target.embed_dim})",
           api_keys=api_keys, state=state, admin_key=admin_key)


@app.command("image2image")
def serve_image2image_cmd(
    *,
    model: Annotated[str, model_option("image2image", url=False)],
    arch: ModelArch = None,
    image_size: InputSize = None,
    host: Host = "127.0.0.1",
    port: Port = 8080,
    max_queries: MaxQueries = None,
    rate: Rate = None,
    max_batch: MaxBatch = 64,
    max_body_mb: MaxBodyMB = 64.0,
    max_image_side: MaxImageSide = 512,
    no_log_requests: NoLogRequests = False,
    api_keys: ApiKeys = None,
    state: StateFile = None,
    admin_key: AdminKey = None,
    device: Device = "auto",
    threads: Threads = "auto",
) -> None:
    """Serve an image-to-image model at http://HOST:PORT (/v1/info, /v1/translate)."""
    use_threads(threads)
    config = dict(max_batch=max_batch, max_body_bytes=int(max_body_mb * 2**20),
                  max_image_side=max_image_side, max_queries=max_queries, rate=rate)
    _serve("image2image", _local(model), config, host=host, port=port, arch=arch,
           image_size=image_size, device=device, log_requests=not no_log_requests,
           api_keys=api_keys, state=state, admin_key=admin_key)


@app.command("captioner")
def serve_captioner_cmd(
    *,
    model: Annotated[str, model_option("captioner", url=False)],
    image_size: InputSize = None,
    host: Host = "127.0.0.1",
    port: Port = 8080,
    max_queries: MaxQueries = None,
    rate: Rate = None,
    max_batch: MaxBatch = 64,
    max_body_mb: MaxBodyMB = 64.0,
    max_image_side: MaxImageSide = 512,
    no_log_requests: NoLogRequests = False,
    api_keys: ApiKeys = None,
    state: StateFile = None,
    admin_key: AdminKey = None,
    device: Device = "auto",
    threads: Threads = "auto",
) -> None:
    """Serve a captioner at http://HOST:PORT (/v1/info, /v1/caption) until interrupted."""
    use_threads(threads)
    config = dict(max_batch=max_batch, max_body_bytes=int(max_body_mb * 2**20),
                  max_image_side=max_image_side, max_queries=max_queries, rate=rate)
    _serve("captioner", _local(model), config, host=host, port=port, arch=None,
           image_size=image_size, device=device, log_requests=not no_log_requests,
           api_keys=api_keys, state=state, admin_key=admin_key)


@app.command("image-text")
def serve_image_text_cmd(
    *,
    model: Annotated[str, model_option("image-text", url=False)],
    image_size: InputSize = None,
    host: Host = "127.0.0.1",
    port: Port = 8080,
    max_queries: Annotated[int | None, typer.Option(
        help="Total images and texts the service will answer (default: no limit).",
        rich_help_panel=SERVICE_PANEL)] = None,
    rate: Rate = None,
    max_batch: MaxBatch = 64,
    max_body_mb: MaxBodyMB = 64.0,
    max_image_side: MaxImageSide = 512,
    max_texts: MaxTexts = 256,
    max_text_chars: MaxTextChars = 256 * 1024,
    no_log_requests: NoLogRequests = False,
    api_keys: ApiKeys = None,
    state: StateFile = None,
    admin_key: AdminKey = None,
    device: Device = "auto",
    threads: Threads = "auto",
) -> None:
    """Serve an image-text (CLIP-style) model at http://HOST:PORT (/v1/info,
    /v1/embed_images, /v1/embed_texts, /v1/usage) until interrupted; each image and each
    text is one query."""
    use_threads(threads)
    config = dict(max_batch=max_batch, max_body_bytes=int(max_body_mb * 2**20),
                  max_image_side=max_image_side, max_queries=max_queries, rate=rate,
                  max_texts=max_texts, max_text_chars=max_text_chars)
    _serve("image-text", _local(model), config, host=host, port=port, arch=None,
           image_size=image_size, device=device, log_requests=not no_log_requests,
           banner=" (input {target.input_size}, embedding {target.embed_dim})",
           api_keys=api_keys, state=state, admin_key=admin_key)
