"""``leakprobe serve encoder|image2image|captioner``: a model behind an HTTP API.

The service announces its limits at ``/v1/info`` (``max_batch``, ``max_body_bytes``,
``max_image_side``) and leakprobe's clients size their requests under them; a request over a
limit is answered 413 naming the option here that sets it. One JSON line per request goes to
stderr (``--no-log-requests`` turns it off); headers, and so keys, are never logged.
"""

from __future__ import annotations

from typing import Annotated

import typer

from leakprobe.cli.options import Device, InputSize, ModelArch, Seed, Threads, use_threads
from leakprobe.errors import LeakprobeError

app = typer.Typer(no_args_is_help=True, help="Serve a model over HTTP.")

Host = Annotated[str, typer.Option(help="Address to listen on.")]
Port = Annotated[int, typer.Option(help="Port to listen on.")]
MaxQueries = Annotated[int | None, typer.Option(
    help="Total images the service will answer (default: no limit).")]
Rate = Annotated[float | None, typer.Option(help="Requests per second per client.")]
MaxBatch = Annotated[int, typer.Option(
    min=1, help="Images per request (announced at /v1/info; clients send no more).")]
MaxBodyMB = Annotated[float, typer.Option(
    min=0.01, help="Request body limit in MiB (announced at /v1/info; clients size their "
    "requests under it; 224-px images take 0.19 MiB each as uint8, 0.77 as float32).")]
MaxImageSide = Annotated[int, typer.Option(min=1, help="Largest accepted image side.")]
NoLogRequests = Annotated[bool, typer.Option(
    "--no-log-requests", help="Do not write the JSON line per request to stderr (client, "
    "path, status, body bytes, images, ms; never a header or key).")]
EntryModel = Annotated[str, typer.Option(help="Model file, .safetensors (+ --arch), entry "
                                         "point.")]


def _local(model: str) -> str:
    if model.startswith(("http://", "https://")):
        raise LeakprobeError("serve needs a local model, not a URL")
    return model


def _serve(family_name: str, model: str, config_options: dict, *, host: str, port: int,
           arch: str | None, image_size: int | None, device: str, banner: str = "",
           log_requests: bool = True) -> None:
    """Load ``--model`` as a target of the family and serve it with the family's service."""
    from leakprobe.serving.server import ServeConfig, run_server
    from leakprobe.targets.families import family, load_target

    target = load_target(model, family=family_name, arch=arch, image_size=image_size,
                         device=device)
    config = ServeConfig(**config_options)
    typer.echo(f"serving {model} at http://{host}:{port}{banner.format(target=target)}; "
               f"requests up to {config.max_batch} images and "
               f"{config.max_body_bytes / 2**20:g} MiB", err=True)
    run_server(family(family_name).service(target, config), host, port,
               log_requests=log_requests)


@app.command("encoder")
def serve_encoder_cmd(
    *,
    model: EntryModel,
    arch: ModelArch = None,
    image_size: InputSize = None,
    host: Host = "127.0.0.1",
    port: Port = 8080,
    max_queries: MaxQueries = None,
    rate: Rate = None,
    max_batch: MaxBatch = 256,
    max_body_mb: MaxBodyMB = 64.0,
    max_image_side: MaxImageSide = 512,
    noise: Annotated[float, typer.Option(help="Gaussian noise std added to embeddings.")
                     ] = 0.0,
    top_k: Annotated[int | None, typer.Option(help="Return only the k largest coordinates.")
                     ] = None,
    round_decimals: Annotated[int | None, typer.Option(
        help="Round embeddings to N decimals.")] = None,
    seed: Seed = 0,
    device: Device = "auto",
    threads: Threads = "auto",
    no_log_requests: NoLogRequests = False,
) -> None:
    """Serve an encoder at http://HOST:PORT (/v1/info, /v1/embed) until interrupted."""
    use_threads(threads)
    config = dict(max_batch=max_batch, max_body_bytes=int(max_body_mb * 2**20),
                  max_image_side=max_image_side, max_queries=max_queries, rate=rate,
                  noise=noise, top_k=top_k, round_decimals=round_decimals, seed=seed)
    _serve("encoder", _local(model), config, host=host, port=port, arch=arch,
           image_size=image_size, device=device, log_requests=not no_log_requests,
           banner=" (input {target.input_size}, embedding {target.embed_dim})")


@app.command("image2image")
def serve_image2image_cmd(
    *,
    model: EntryModel,
    arch: ModelArch = None,
    image_size: InputSize = None,
    host: Host = "127.0.0.1",
    port: Port = 8080,
    max_queries: MaxQueries = None,
    rate: Rate = None,
    max_batch: MaxBatch = 64,
    max_body_mb: MaxBodyMB = 64.0,
    max_image_side: MaxImageSide = 512,
    device: Device = "auto",
    threads: Threads = "auto",
    no_log_requests: NoLogRequests = False,
) -> None:
    """Serve an image-to-image model at http://HOST:PORT (/v1/info, /v1/translate)."""
    use_threads(threads)
    config = dict(max_batch=max_batch, max_body_bytes=int(max_body_mb * 2**20),
                  max_image_side=max_image_side, max_queries=max_queries, rate=rate)
    _serve("image2image", _local(model), config, host=host, port=port, arch=arch,
           image_size=image_size, device=device, log_requests=not no_log_requests)


@app.command("captioner")
def serve_captioner_cmd(
    *,
    model: Annotated[str, typer.Option(help="Captioner folder, TorchScript file "
                                       "(tokenizer.json beside it), FILE.py:factory or "
                                       "module:factory.")],
    image_size: InputSize = None,
    host: Host = "127.0.0.1",
    port: Port = 8080,
    max_queries: MaxQueries = None,
    rate: Rate = None,
    max_batch: MaxBatch = 64,
    max_body_mb: MaxBodyMB = 64.0,
    max_image_side: MaxImageSide = 512,
    device: Device = "auto",
    threads: Threads = "auto",
    no_log_requests: NoLogRequests = False,
) -> None:
    """Serve a captioner at http://HOST:PORT (/v1/info, /v1/caption) until interrupted."""
    use_threads(threads)
    config = dict(max_batch=max_batch, max_body_bytes=int(max_body_mb * 2**20),
                  max_image_side=max_image_side, max_queries=max_queries, rate=rate)
    _serve("captioner", _local(model), config, host=host, port=port, arch=None,
           image_size=image_size, device=device, log_requests=not no_log_requests)
