"""`make plot`: draws plot/simulate.py's sweep into docs/holding.png (the README shows it).

Usage: python -m plot.draw [output.png]
"""

import sys
import textwrap

import matplotlib

matplotlib.use("Agg")  # a file, no display

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: E402

from plot.simulate import Assumptions, Point, Strategy, caption, sweep  # noqa: E402

OUTPUT = "docs/holding.png"
STYLE = {Strategy.POLL: ("tab:gray", "o"), Strategy.WAKE: ("tab:blue", "s"),
         Strategy.PUSH: ("tab:green", "^")}


def draw(points, a: Assumptions, path: str) -> None:
    fig, (share, delay) = plt.subplots(2, 1, sharex=True, figsize=(8, 8.6))
    for strategy in Strategy:
        mine = [p for p in points if p.strategy == strategy]
        color, marker = STYLE[strategy]
        style = dict(color=color, marker=marker, label=strategy.value)
        share.plot([p.mean_offline_hours for p in mine], [100 * p.delivered_share for p in mine],
                   **style)
        timed = [p for p in mine if p.median_delay_hours is not None]
        delay.plot([p.mean_offline_hours for p in timed], [p.median_delay_hours for p in timed],
                   **style)
    hold_hours = a.policy.max_hold_blocks * a.block_minutes / 60
    poll_hours = a.policy.poll_blocks * a.block_minutes / 60
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    for ax in (share, delay):
        ax.set_xscale("log")
        ax.set_xticks(a.mean_offline_hours)
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(True, which="both", alpha=0.3)
        ax.axvline(hold_hours, color="tab:red", linestyle="--", linewidth=1)
        ax.axvline(poll_hours, color="black", linestyle=":", linewidth=1)
    share.text(hold_hours, 40, "hold limit ", color="tab:red", rotation=90, va="center", ha="right")
    share.text(poll_hours, 65, " poll interval", color="black", rotation=90, va="center")
    share.set_ylabel("payments delivered (%)")
    share.set_ylim(0, 105)
    share.legend(loc="lower left")
    share.set_title("What holding buys: an HTLC held for an offline recipient B")
    delay.set_yscale("log")
    delay.yaxis.set_major_formatter(plain)
    delay.set_ylabel("median delay to delivery,\nof the payments delivered (hours)")
    delay.set_xlabel("how long B stays offline: mean of its exponential offline time (hours)")
    fig.text(0.02, 0.01, textwrap.fill(caption(a), 140), fontsize=7.5, va="bottom")
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)


def main(argv) -> None:
    a = Assumptions()
    path = argv[1] if len(argv) > 1 else OUTPUT
    draw(sweep(a), a, path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv)
