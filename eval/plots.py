"""PNG plots of an eval run (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def metric_curves(path: Path, curves: Mapping[str, Mapping[str, Sequence[float]]], title: str) -> Path:
    """NDCG@K and Recall@K against K (log axis), one line per method."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, curve in curves.items():
        style = "-" if name.startswith(("llm", "sasrec")) else "--"
        left.plot(curve["k"], curve["ndcg"], style, label=name)
        right.plot(curve["k"], curve["recall"], style, label=name)
    for axis, label in ((left, "NDCG@K"), (right, "Recall@K (= HR@K)")):
        axis.set_xscale("log")
        axis.set_xlabel("K")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    right.legend(fontsize=8, loc="upper left")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def position_bias(path: Path, positions: Sequence[int], mean_rank: Mapping[str, Sequence[float]], users: int) -> Path:
    plt = _pyplot()
    fig, axis = plt.subplots(figsize=(6.5, 4.5))
    for label, values in mean_rank.items():
        axis.plot(positions, values, marker="o", label=label)
    n = len(positions)
    axis.plot(positions, positions, ":", color="grey", label="copies the list order")
    axis.axhline((n - 1) / 2, linestyle="--", color="grey", alpha=0.6, label="no signal (random)")
    axis.set_xlabel("position of the target in the prompt (0 = first, label A)")
    axis.set_ylabel("mean rank of the target, LLM-only (0 = first)")
    axis.set_title(f"Position bias ({users} users)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def funnel(path: Path, stages: Sequence[tuple[str, int]], users: int) -> Path:
    """Horizontal bars: how many test targets survive each stage."""
    plt = _pyplot()
    fig, axis = plt.subplots(figsize=(7.5, 0.55 * len(stages) + 1.2))
    labels = [s for s, _ in stages][::-1]
    counts = [c for _, c in stages][::-1]
    bars = axis.barh(labels, counts, color="#4c72b0")
    for bar, count in zip(bars, counts):
        axis.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {count} ({count / max(users, 1):.1%})",
                  va="center", fontsize=8)
    axis.set_xlim(0, users * 1.25)
    axis.set_xlabel("test targets")
    axis.set_title("Where the test targets are lost")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def validation_curve(path: Path, rows: Sequence[Mapping[str, float]], best_epoch: int) -> Path:
    """SASRec's validation NDCG@10 and training loss per epoch, the kept epoch marked."""
    plt = _pyplot()
    fig, axis = plt.subplots(figsize=(6.5, 4))
    epochs = [r["epoch"] for r in rows]
    axis.plot(epochs, [r["valid_ndcg10"] for r in rows], marker=".", color="#4c72b0", label="validation NDCG@10")
    axis.axvline(best_epoch, linestyle="--", color="grey", label=f"kept: epoch {best_epoch}")
    axis.set_xlabel("epoch (0-based)")
    axis.xaxis.get_major_locator().set_params(integer=True)
    axis.set_ylabel("validation NDCG@10 (history masked)")
    loss = axis.twinx()
    loss.plot(epochs, [r["train_loss"] for r in rows], color="#dd8452", alpha=0.6, label="training loss")
    loss.set_ylabel("training loss (CE, summed over batches)")
    lines = axis.get_legend_handles_labels()
    more = loss.get_legend_handles_labels()
    axis.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, loc="lower right")
    axis.set_title("SASRec: early stopping on validation")
    axis.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
