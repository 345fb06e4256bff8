"""coordexp's SLURM launcher (`hydra/launcher=slurm`; Hydra loads launchers from the hydra_plugins package only):
Hydra's submitit launcher, except that a job that ends
without a result (cancelled with scancel, killed, out of memory, its node lost) is recorded as that job's
failure, with SLURM's reason, and the sweep collects the other jobs and writes its summary.

(The plugin's own launcher raises submitit's error at the first such job and the sweep ends there.)
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
try:  # Hydra imports every plugin module: without the `sweep` extra there is no submitit launcher to extend
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as SubmititSlurmLauncher
except ImportError:
    SubmititSlurmLauncher = object  # then this is no launcher, and hydra/launcher=slurm says it cannot load it
from omegaconf import OmegaConf, open_dict

log = logging.getLogger(__name__)
# sha1 of the source of the installed plugin's SlurmLauncher.launch that `launch` below follows: Hydra gives no
# hook for collecting a job's results, so a change there must be read and followed (tests/test_slurm_launcher.py)
PLUGIN_LAUNCH_SHA1 = "4819d673610cf7a99f9ec1a315c871e098d9ccdd"


class SlurmLauncher(SubmititSlurmLauncher):
    """submitit's SLURM launcher; a job without a result is a failed job of the sweep, not the sweep's end."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit  # lazily, as the plugin does: plugin discovery stays fast

        # the plugin's launch (PLUGIN_LAUNCH_SHA1 is the version read), up to collecting the results
        init_keys = {"max_num_timeout", "submitit_folder"}
        executor = submitit.AutoExecutor(folder=self.params["submitit_folder"], cluster=self._EXECUTOR,
                                         slurm_max_num_timeout=self.params["max_num_timeout"])
        shared = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{key if key in shared else f"{self._EXECUTOR}_{key}": value
                                      for key, value in self.params.items() if key not in init_keys})
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        log.info(f"Submitit '{self._EXECUTOR}' sweep output dir : {sweep_dir}")
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:  # the plugin's: hydra.sweep.mode, an octal string, for the sweep dir
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        numbers = range(initial_job_idx, initial_job_idx + len(job_overrides))
        for number, overrides in zip(numbers, job_overrides):
            log.info(f"\t#{number} : {' '.join(filter_overrides(overrides))}")
        jobs = executor.map_array(self, [list(o) for o in job_overrides], ["hydra.sweep.dir"] * len(job_overrides),
                                  list(numbers), [f"job_id_for_{n}" for n in numbers],
                                  [Singleton.get_state()] * len(job_overrides))
        return [self.collect(job, list(overrides), number)
                for job, overrides, number in zip(jobs, job_overrides, numbers)]

    def collect(self, job, overrides: list[str], number: int) -> JobReturn:
        """The job's return; for a job that ended without one, a record of why in its run directory."""
        from submitit.core.utils import UncompletedJobError

        from coordexp.rundir import METRICS_FILE, read_metrics, write_json  # here: Hydra imports plugins at start-up
        from coordexp.sweep import failed_job_value

        try:
            return job.results()[0]
        except UncompletedJobError:
            reason = f"SLURM job {job.job_id} ended {job.state} without a result"
        config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(config.hydra.job):
            config.hydra.job.num = number
        run_dir = Path(str(config.hydra.sweep.dir)) / str(config.hydra.sweep.subdir)  # the job's, as Hydra names it
        metrics = read_metrics(run_dir)
        if metrics is None or metrics.get("status") != "completed":  # a checkpoint there still lets a rerun continue
            write_json(run_dir / METRICS_FILE, {**(metrics or {}), "status": "failed", "error": reason})
        log.error("job %d: %s", number, reason)
        # COMPLETED with a job's failure value: the sweeper re-raises a FAILED return, which ends the sweep
        result = JobReturn(overrides=overrides, status=JobStatus.COMPLETED)
        result.return_value = failed_job_value(config)  # the public setter
        return result
