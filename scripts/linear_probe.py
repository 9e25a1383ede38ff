"""A sanity baseline for a `dass synth` (or any AST-format) corpus: logistic regression on time-pooled
fbank statistics (per-bin mean, std and max over time), one-vs-rest, fitted to convergence.

It says how much of the task is linearly separable from clip-level spectra, i.e. what a network
should at least reach; results/synth_kd.md uses it to tell an under-trained network from a broken one.

    python3 scripts/linear_probe.py data/synth --train-clips 1500 --eval-clips 600

Prints chance mAP (each class scored by its prevalence), the probe's mAP and mAUC on the eval split.
Uses the corpus's feature cache (CORPUS/feature_cache) when present.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def pooled_stats(dataset, count: int) -> tuple[np.ndarray, np.ndarray]:
    """(count, 3 * bins) features and (count, classes) targets of the first ``count`` clips."""
    features, targets = [], []
    for i in range(min(count, len(dataset))):
        fbank = dataset.fbank(i).numpy()
        features.append(np.concatenate([fbank.mean(0), fbank.std(0), fbank.max(0)]))
        targets.append(dataset.targets(i).numpy())
    return np.array(features), np.array(targets)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpus", type=Path, help="folder with train.json, eval.json, class_labels_indices.csv")
    parser.add_argument("--train-clips", type=int, default=1500)
    parser.add_argument("--eval-clips", type=int, default=600)
    args = parser.parse_args()

    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score, roc_auc_score
    from sklearn.multiclass import OneVsRestClassifier

    from dass.data.dataset import AudioTaggingDataset

    cache = args.corpus / "feature_cache"
    kw = dict(max_length=1024, cache_dir=cache if cache.is_dir() else None)
    x_train, y_train = pooled_stats(AudioTaggingDataset(args.corpus / "train.json", **kw), args.train_clips)
    x_eval, y_eval = pooled_stats(AudioTaggingDataset(args.corpus / "eval.json", **kw), args.eval_clips)
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    probe = OneVsRestClassifier(LogisticRegression(max_iter=300, C=0.5))
    probe.fit((x_train - mean) / std, y_train)
    scores = probe.predict_proba((x_eval - mean) / std)
    present = y_eval.sum(0) > 0  # classes with positives in the eval clips
    y, s = y_eval[:, present], scores[:, present]
    print(f"{args.corpus}: {len(x_train)} train / {len(x_eval)} eval clips, {int(present.sum())} classes, "
          f"{y_train.sum(1).mean():.2f} labels per clip")
    print(f"chance mAP {y.mean(0).mean():.4f}")
    print(f"linear probe mAP {average_precision_score(y, s, average='macro'):.4f}  "
          f"mAUC {roc_auc_score(y, s, average='macro'):.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
