"""coordexp: the CoordConv toy experiments (Liu et al., NeurIPS 2018) as a Hydra-configured framework."""
