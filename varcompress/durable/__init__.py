"""Durable, atomic writes of files, directories and log lines; operating-system errors as one line.

The one writing mechanism of varcompress: `files.py` (atomic_write), `dirs.py` (atomic_dir,
replace_dir, recover_dir, remove_stale_temps, check_output), `logs.py` (append_line). A write counts as
done only once the data and the directory entry are fsynced, so a power loss after a
write returns never loses it, and older checkpoints are pruned only after that.
Directories are swapped in with one atomic exchange (Linux `renameat2(RENAME_EXCHANGE)`);
where that is missing, the old directory is kept as `.NAME.old-*` until the new one is
in place, and `recover_dir` (run before every write and by `remove_stale_temps`) puts it
back if a run was cut between the two renames. Every `OSError` becomes one
`VarcompressError` line naming the path and the cause, with nothing half-written left.
"""
from .common import fsync_dir, fsync_file, fsync_tree, is_temp_name, make_parents, os_error_line
from .dirs import atomic_dir, check_output, recover_dir, remove_stale_temps, replace_dir
from .files import atomic_write
from .logs import append_line

__all__ = ["append_line", "atomic_dir", "atomic_write", "check_output", "fsync_dir", "fsync_file", "fsync_tree",
           "is_temp_name", "make_parents", "os_error_line", "recover_dir", "remove_stale_temps", "replace_dir"]
