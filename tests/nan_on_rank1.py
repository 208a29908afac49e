"""``train.py`` with the loss made NaN in rank 1's second batch: run by ``test_ddp`` (not a test module).

Lightning starts rank 1 with this same command line, so both ranks carry the patch.
"""
import os
from pathlib import Path

import hydra

from bijdiff.app.common import run_cli
from bijdiff.app.train import train
from bijdiff.objectives import DiffusionObjective

real = DiffusionObjective.train_nats
calls = {"n": 0}


def nan_on_rank1(self, *args, **kwargs):
    calls["n"] += 1
    nats = real(self, *args, **kwargs)
    return nats * float("nan") if os.environ.get("LOCAL_RANK", "0") == "1" and calls["n"] == 2 else nats


@hydra.main(version_base="1.3", config_path=str(Path(__file__).resolve().parents[1] / "conf"), config_name="train")
def main(cfg) -> None:
    run_cli(train, cfg)


if __name__ == "__main__":
    DiffusionObjective.train_nats = nan_on_rank1
    main()
