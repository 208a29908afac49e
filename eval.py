"""Evaluate a checkpoint: ``python eval.py ckpt_path=PATH [split=test] [output_json=PATH]``."""
import hydra
from omegaconf import DictConfig

from bijdiff.app.common import run_cli
from bijdiff.app.evaluate import evaluate


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    run_cli(evaluate, cfg)


if __name__ == "__main__":
    main()
