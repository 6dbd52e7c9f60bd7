"""SLURM and PBS clusters for ``medsr batch`` through ``dask-jobqueue``.

Each job runs one Dask worker that takes one volume at a time and gives torch and SimpleITK
all the CPUs of the job (``MEDSR_THREADS``), and optionally GPUs.
"""

from __future__ import annotations

from collections.abc import Sequence

from medsr.errors import MedsrError

KINDS = ("slurm", "pbs")


def jobqueue_cluster(kind: str, *, cores: int = 4, memory: str = "16GB", gpus: int = 0,
                     walltime: str = "02:00:00", queue: str | None = None,
                     account: str | None = None, job_extra_directives: Sequence[str] = (),
                     job_script_prologue: Sequence[str] = (), **kwargs):
    """A ``dask_jobqueue`` cluster configured for medsr; nothing is submitted until scaled.

    Args:
        kind: ``"slurm"`` or ``"pbs"``.
        cores: CPUs of each job, all used by the one volume in work.
        memory: memory of each job (also the worker's memory limit), e.g. ``"16GB"``.
        gpus: GPUs of each job (``--gres=gpu:N`` on SLURM, ``ngpus=N`` on PBS).
        walltime: ``HH:MM:SS`` per job.
        queue: partition (SLURM) or queue (PBS).
        account: account/project to charge.
        job_extra_directives: more ``#SBATCH``/``#PBS`` lines, e.g. ``["--constraint=a100"]``.
        job_script_prologue: shell lines run before the worker (``module load ...``).
        **kwargs: passed to the cluster class (``python``, ``interface``, ``log_directory``...).

    Example:
        >>> cluster = slurm_cluster(cores=8, memory="32GB", gpus=1)   # doctest: +SKIP
        >>> cluster.scale(jobs=10)                                      # doctest: +SKIP
        >>> upscale_tree("study", "study_sr", client=Client(cluster))  # doctest: +SKIP
    """
    if kind not in KINDS:
        raise MedsrError(f"unknown job queue {kind!r}; choose one of {', '.join(KINDS)}")
    if cores < 1 or gpus < 0:
        raise MedsrError("a job needs at least one core and a non-negative number of GPUs")
    try:
        import dask_jobqueue
    except ImportError:
        raise MedsrError("job queues need dask-jobqueue: pip install 'medsr[cluster]'") from None
    directives = list(job_extra_directives)
    prologue = [f"export MEDSR_THREADS={cores}", *job_script_prologue]
    common = {"cores": 1, "processes": 1, "memory": memory, "walltime": walltime,
              "queue": queue, "account": account, "job_script_prologue": prologue,
              "job_name": "medsr"}
    if kind == "slurm":
        if gpus:
            directives.append(f"--gres=gpu:{gpus}")
        return dask_jobqueue.SLURMCluster(job_cpu=cores, job_mem=memory,
                                          job_extra_directives=directives,
                                          **common, **kwargs)
    spec = f"select=1:ncpus={cores}:mem={memory}" + (f":ngpus={gpus}" if gpus else "")
    return dask_jobqueue.PBSCluster(resource_spec=spec, job_extra_directives=directives,
                                    **common, **kwargs)


def slurm_cluster(**kwargs):
    """A ``dask_jobqueue.SLURMCluster`` for medsr: see :func:`jobqueue_cluster`."""
    return jobqueue_cluster("slurm", **kwargs)


def pbs_cluster(**kwargs):
    """A ``dask_jobqueue.PBSCluster`` for medsr: see :func:`jobqueue_cluster`."""
    return jobqueue_cluster("pbs", **kwargs)
