"""``dass serve``: a local web page with the tags, timeline and events of a recording."""

from __future__ import annotations

import argparse
import os

from .tag import DEFAULT_MODEL

NAME = "serve"
HELP = "a local web page: drop a recording, see its tags, timeline heat map and events, play it"
DESCRIPTION = f"""\
Start a small web server and open its page in a browser. Drop or pick an audio file (or, with
--root, name a file under that folder on the server) to see the model's top tags, the timeline heat
map of the classes with the highest peaks (0.32 s steps; zoom with the wheel or the buttons, drag to
scroll), the list of detected events, and play the audio with a cursor that follows; click an event
or a heat-map cell to play from there. Long recordings go through the exact tiled engine, with their
progress on the page. Everything is served from this machine: the page loads nothing from the network.

The server listens on 127.0.0.1 (this machine only) unless --host says otherwise; it has no
authentication, so only expose it on networks you trust.

examples:
  dass serve --model ./my_dass                 # then open http://127.0.0.1:8000/
  dass serve --model ./my_dass --root /data/recordings --port 8080
  dass serve --model ./my_dass --on-threshold 0.3 --min-duration 1.0

default model: {DEFAULT_MODEL}
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..batch import cli as batch_cli

    parser.add_argument("--model", default=DEFAULT_MODEL, metavar="PATH_OR_ID",
                        help=f"checkpoint folder/file or Hugging Face hub id (default: {DEFAULT_MODEL}; a DASS model)")
    parser.add_argument("--labels", metavar="CSV", help="class names from a class_labels_indices.csv")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 = any free port)")
    parser.add_argument("--root", metavar="DIR", help="let the page open files under DIR on the server")
    parser.add_argument("--threads", type=int, default=None, metavar="N", help="CPU threads of the model")
    parser.add_argument("--min-frames", type=int, default=1024, metavar="N",
                        help="pad shorter files to N frames as in training (default 1024)")
    events = parser.add_argument_group("events (as dass tag --events)")
    batch_cli.add_event_arguments(events)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..batch import cli as batch_cli
    from ..checkpoints import from_pretrained
    from ..errors import DassError
    from ..serve import Analyzer, serve
    from .tag import class_names

    if args.threads is not None:
        if args.threads < 1:
            raise DassError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.root is not None and not os.path.isdir(args.root):
        raise DassError(f"--root {args.root}: no such folder")
    if not 0 <= args.port <= 65535:
        raise DassError(f"--port must be 0..65535, got {args.port}")
    model = from_pretrained(args.model)
    if getattr(model, "model_type", None) != "dass":
        raise DassError(f"dass serve needs a DASS model (its timeline), got {type(model).__name__}")
    analyzer = Analyzer(model, class_names(model, args.labels), model_name=str(args.model), root=args.root,
                        events=batch_cli.event_params(args), min_frames=args.min_frames)
    try:
        serve(analyzer, args.host, args.port)
    except OSError as e:
        raise DassError(f"cannot listen on {args.host}:{args.port} ({e.strerror or e})") from None
    return 0
