"""The Jupyter kernel: the one the kit starts for papermill (the notebook series, grid points),
and whether the kit itself runs inside one (:func:`in_kernel`).

jupyter_client starts kernels on loopback TCP by default, and ipykernel then warns "Kernel is
running over TCP without encryption" once per notebook. On POSIX the kit asks for IPC
transport instead (Unix sockets in a private folder, removed at exit): the same kernel, no
network port, no warning. jupyter_client has the switch but papermill does not expose it, so
the manager class is made here and passed as nbclient's ``kernel_manager_class``.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile


@functools.cache
def ipc_kernel_manager() -> type:
    """jupyter_client's kernel manager on IPC (a Unix socket in a private folder) instead of
    loopback TCP: the same kernel, and ipykernel no longer warns "Kernel is running over TCP
    without encryption" once per notebook (issue 23). TCP stays where IPC does not exist."""
    from jupyter_client.manager import AsyncKernelManager

    class IPCKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs):
            if os.name == "posix":
                kwargs.setdefault("transport", "ipc")
                kwargs.setdefault("ip", os.path.join(_socket_dir(), "kernel"))
            super().__init__(**kwargs)

    return IPCKernelManager


@functools.cache
def _socket_dir() -> str:
    """One private folder per process for the kernels' sockets, removed at exit."""
    folder = tempfile.mkdtemp(prefix="llmtrsr-kernel-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def in_kernel() -> bool:
    """True inside a Jupyter kernel (JupyterLab, papermill), where figures are shown inline
    and a finished progress bar stays as one widget line; False in a terminal or a test."""
    try:
        from IPython import get_ipython
    except ImportError:  # IPython comes with Jupyter; the kit runs without it
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None
