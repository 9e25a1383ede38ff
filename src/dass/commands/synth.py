"""``dass synth``: build the offline, labelled, AudioSet-style synthetic corpus."""

from __future__ import annotations

import argparse

NAME = "synth"
HELP = "build an offline labelled AudioSet-style corpus (instruments, speech, tones, noise)"
DESCRIPTION = """\
Build a labelled corpus in AST's data format from sounds that install offline:

  * sampled instruments and GM sound effects rendered by FluidSynth with the FluidR3 GM soundfont
    (Debian packages fluidsynth, fluid-soundfont-gm): piano, organ, guitars, bass, strings, brass,
    woodwinds, harp, marimba, steelpan, accordion, harmonica, bagpipes, choir, drum kit, bird tweet,
    telephone ring, helicopter, applause, gunshot, waves, breathing;
  * speech and 4-7 voice babble from espeak-ng (Debian package espeak-ng), several languages and
    male/female voices;
  * procedural tones and noise (numpy only, always available): sine, white/pink noise, chirp, beep,
    siren, dial tone, busy signal, DTMF, mains hum, clicking, tick-tock, bell.

Each 10.00 s, 16 kHz mono FLAC clip mixes 1-3 events (random onsets, lengths and gains) over a quiet
background; its labels are the union of the events' AudioSet classes, leaf + parents (e.g. Piano,
Keyboard (musical), Musical instrument, Music). 59 classes with all sources (15 procedural only); the
sampling is balanced so that every class has >= 30 positives in 3000 train clips and >= 10 in 600 eval.

Writes OUT_DIR/train.json and eval.json ({"data": [{"wav": ..., "labels": "/m/..,/m/.."}]}, wav paths
relative to OUT_DIR unless --absolute-paths), class_labels_indices.csv (real AudioSet ids),
audio/{train,eval}/*.flac, stats.json, stats.md and synth_config.json. The output is the same for the
same --seed and sources; clip i does not depend on --train/--eval, so a corpus can be grown. Clips are
written atomically and existing ones are skipped: re-run the same command to resume.

--haystacks also writes held-out long waveforms for the NIAH benchmark (voices, languages and seeds
unused by the clips): OUT_DIR/haystacks/babble/*.flac and OUT_DIR/haystacks/noise/*.flac.

Missing programs are reported and their sources skipped (the procedural ones always work).

examples:
  dass synth corpus/                          # 3000 train + 600 eval clips, all sources
  dass synth corpus/ --train 200 --eval 50 --sources procedural
  dass synth corpus/ --haystacks --haystack-seconds 600 --workers 4

--task builds the offline versions of SSAMBA's downstream tasks instead (train/valid/test splits,
same JSON format; details: dass.data.synth_tasks):
  keywords    the 35 Speech Commands v2 words, 1 s clips, espeak-ng (+ festival) voices; the test
              voices never occur in training (--train/--valid/--test clips: 3500/700/1050)
  speakers    --speakers N synthetic speakers, 2-6 s sentences, split by utterance
              (--utterances TRAIN,VALID,TEST per speaker: 16,4,6)
  tagging     the corpus above (built into OUT_DIR/corpus with --train/--eval clips: 600/150, or
              --from CORPUS) cut into --seconds windows; train/valid from its train clips, test from eval
  unlabelled  a pretraining pool of --clips clips of --seconds mixing all sources (+ --add DIR ...)

  dass synth data/keywords --task keywords
  dass synth data/pool --task unlabelled --clips 3000 --seconds 2 --add ~/recordings
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", metavar="OUT_DIR", help="output directory (created; resumes if present)")
    parser.add_argument("--train", type=int, default=None, metavar="N",
                        help="train clips (default 3000; --task keywords: 3500)")
    parser.add_argument("--eval", type=int, default=None, metavar="M", help="eval clips (default 600)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--sources", default="procedural,fluidsynth,espeak",
                        help="comma-separated backends to use: procedural, fluidsynth, espeak (default: all)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--haystacks", action="store_true", help="also write NIAH babble and noise haystacks")
    parser.add_argument("--haystack-count", type=int, default=3, metavar="K",
                        help="haystack files per kind (default 3)")
    parser.add_argument("--haystack-seconds", type=int, default=300, metavar="S",
                        help="length of each haystack file in seconds (default 300)")
    parser.add_argument("--absolute-paths", action="store_true",
                        help="write absolute wav paths in the JSON files (as AST's own datafiles)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    tasks = parser.add_argument_group("tasks (--task)")
    tasks.add_argument("--task", default=None, choices=("keywords", "speakers", "tagging", "unlabelled"),
                       help="build a downstream task or the unlabelled pool instead of the corpus")
    tasks.add_argument("--valid", type=int, default=None, metavar="N", help="keywords: valid clips (default 700)")
    tasks.add_argument("--test", type=int, default=None, metavar="N", help="keywords: test clips (default 1050)")
    tasks.add_argument("--speakers", type=int, default=40, metavar="N", help="speakers: how many (default 40)")
    tasks.add_argument("--utterances", default="16,4,6", metavar="TR,VA,TE",
                       help="speakers: utterances per speaker in train,valid,test (default 16,4,6)")
    tasks.add_argument("--seconds", type=float, default=None, metavar="S",
                       help="tagging: window length (default 3); unlabelled: clip length (default 2)")
    tasks.add_argument("--clips", type=int, default=3000, metavar="N", help="unlabelled: pool clips (default 3000)")
    tasks.add_argument("--from", dest="from_corpus", default=None, metavar="CORPUS",
                       help="tagging: cut this existing dass synth corpus instead of building one")
    tasks.add_argument("--add", action="append", default=[], metavar="DIR",
                       help="unlabelled: also list the audio files below DIR (repeatable)")


def run(args: argparse.Namespace) -> int:
    import sys
    import warnings

    from ..data.synth import build_corpus

    sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    if args.task is not None:
        return _run_task(args, sources)
    args.train = 3000 if args.train is None else args.train
    args.eval = 600 if args.eval is None else args.eval
    def show(message, *_args, **_kwargs) -> None:  # "dass synth: skipping ..." without the source line
        print(message, file=sys.stderr)

    with warnings.catch_warnings():  # restores warnings.showwarning afterwards
        warnings.simplefilter("always")
        warnings.showwarning = show
        stats = build_corpus(args.out_dir, num_train=args.train, num_eval=args.eval, seed=args.seed,
                             sources=sources, workers=args.workers, haystacks=args.haystacks,
                             haystack_count=args.haystack_count, haystack_seconds=args.haystack_seconds,
                             absolute_paths=args.absolute_paths, progress=not args.quiet)
    splits = ", ".join(f"{info['clips']} {split}" for split, info in stats["splits"].items())
    print(f"wrote {args.out_dir}: {splits} clips, {stats['num_classes']} classes "
          f"({stats['wall_s']:.0f} s wall, {stats['cpu_s']:.0f} s CPU); see {args.out_dir}/stats.md")
    return 0


def _run_task(args: argparse.Namespace, sources: list[str]) -> int:
    from ..data.synth_tasks import build_task
    from ..errors import DassError

    common = dict(seed=args.seed, workers=args.workers, progress=not args.quiet)
    if args.task == "keywords":
        counts = {k: v for k, v in (("num_train", args.train), ("num_valid", args.valid), ("num_test", args.test))
                  if v is not None}
        stats = build_task("keywords", args.out_dir, **counts, **common)
    elif args.task == "speakers":
        try:
            utterances = tuple(int(u) for u in args.utterances.split(","))
        except ValueError:
            utterances = ()
        if len(utterances) != 3:
            raise DassError(f"--utterances must be three integers TRAIN,VALID,TEST, got {args.utterances!r}")
        stats = build_task("speakers", args.out_dir, num_speakers=args.speakers, utterances=utterances, **common)
    elif args.task == "tagging":
        stats = build_task("tagging", args.out_dir, corpus=args.from_corpus, seconds=args.seconds or 3.0,
                           num_train=args.train or 600, num_eval=args.eval or 150, sources=tuple(sources), **common)
    else:
        stats = build_task("unlabelled", args.out_dir, num_clips=args.clips, seconds=args.seconds or 2.0,
                           add=args.add, sources=tuple(sources), **common)
    splits = ", ".join(f"{info['clips']} {split}" for split, info in stats["splits"].items())
    print(f"wrote {args.out_dir}: {splits} clips, {stats['num_classes']} classes "
          f"({stats['wall_s']:.0f} s wall, {stats['cpu_s']:.0f} s CPU); see {args.out_dir}/stats.md")
    return 0
