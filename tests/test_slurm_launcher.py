"""The SLURM launcher (hydra_plugins/coordexp_slurm) follows the installed submitit plugin's launch: Hydra has no
public hook for how a launcher collects its jobs, so the plugin's launch is read and followed, and this test fails
the day the installed plugin's launch changes (then read it again and follow what changed)."""
from __future__ import annotations

import hashlib
import inspect

import pytest

plugin = pytest.importorskip("hydra_plugins.hydra_submitit_launcher.submitit_launcher")


def test_the_installed_plugins_launch_is_the_one_the_slurm_launcher_follows():
    from hydra_plugins.coordexp_slurm.slurm_launcher import PLUGIN_LAUNCH_SHA1, SlurmLauncher

    installed = hashlib.sha1(inspect.getsource(plugin.SlurmLauncher.launch).encode()).hexdigest()
    assert installed == PLUGIN_LAUNCH_SHA1, (
        "hydra-submitit-launcher's SlurmLauncher.launch changed: follow the change in "
        "hydra_plugins/coordexp_slurm/slurm_launcher.py and record its sha1 there")
    # by name: Hydra's plugin discovery may import the plugin's module a second time in one process
    assert f"{plugin.__name__}.SlurmLauncher" in [f"{c.__module__}.{c.__name__}" for c in SlurmLauncher.__mro__]


def test_the_slurm_launcher_keeps_the_plugins_sweep_dir_mode():
    from hydra_plugins.coordexp_slurm.slurm_launcher import SlurmLauncher

    assert '"mode" in self.config.hydra.sweep' in inspect.getsource(plugin.SlurmLauncher.launch)
    assert '"mode" in self.config.hydra.sweep' in inspect.getsource(SlurmLauncher.launch)
