"""Train a discrete diffusion language model: ``python train.py [group=option] [key=value]``."""
import hydra
from omegaconf import DictConfig

from bijdiff.app.common import run_cli
from bijdiff.app.train import train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    """Hydra entry point; returns the best validation NLL (for sweepers)."""
    return run_cli(train, cfg)["best_val_nll"]


if __name__ == "__main__":
    main()
