"""Transactional output folders: a set of products appears whole or not at all.

A job that writes several files (FITS maps, a figure, a summary) must never
leave a folder mixing two runs: new maps beside an old summary, or a stale map
of an estimator the new run did not compute. `OutputFolder` gives it the
semantics of a database transaction over a whole folder:

1. `OutputFolder(path)` checks the target before any expensive work, with no
   side effect: it must be a directory or absent (not a file), its nearest
   existing ancestor writable, and, when it exists and is not empty, a set
   written by an earlier run (its ``manifest.json``, or only names matching
   ``own_files`` for folders of older versions), so that replacing it never
   deletes files a user put there. With ``overwrite=False`` a non-empty
   target is an error.
2. Entering the ``with`` block creates a fresh hidden staging folder
   ``.<name>.staging-<run id>`` beside the target (same parent, so the same
   file system), and removes staging folders left by runs that were killed.
   The job writes every product into it (`OutputFolder.path_for`).
3. Leaving the block normally commits: ``manifest.json`` (run id, file names,
   sizes, SHA-256) is written, every file is flushed to disk, and the staging
   folder replaces the target in one step: ``rename(2)`` when the target is
   absent, else an atomic exchange of the two folders (Linux
   ``renameat2(RENAME_EXCHANGE)``), after which the previous set, now under
   the hidden staging name, is deleted. Leaving it by an exception deletes the
   staging folder and leaves the target untouched.

A process killed at any moment (SIGKILL included) therefore leaves at the
target either the complete previous set or the complete new set; what it
leaves beside it is a hidden staging folder, which the next run on the same
target deletes. Each live staging folder holds an exclusive ``flock`` on
itself for the life of its run, so that cleanup never deletes the folder of a
run still writing (two runs on one target both complete; the later commit
wins).

Where the exchange is unavailable (not Linux, a C library without
``renameat2``, or a file system that refuses it), the commit falls back to two
renames: the target to ``.<name>.previous-<run id>``, then the staging folder
to the target. A kill between the two leaves no target for that moment; the
next run on the target renames the previous set back before doing anything
else (and deletes such a folder when the target exists).

Every run has an id (`new_run_id`: UTC time and random hex, e.g.
``20250102T030405Z-9f3a1c2e``) that the job should write into each product
(FITS keyword ``RUNID``, ``summary.json``); `verify` checks a folder against
its manifest.

New files get the permissions of ``open()`` under the process umask (0644 with
the usual umask 022) and the folder those of ``mkdir`` (0755); a replaced
folder keeps the permission bits of the folder it replaces.

This module uses only the standard library, so that tools (and tests) can
load it without TensorFlow.
"""

import ctypes
import datetime
import errno
import fcntl
import fnmatch
import hashlib
import json
import os
import secrets
import shutil
import stat

__all__ = [
    'MANIFEST_NAME',
    'OutputFolder',
    'new_run_id',
    'read_manifest',
    'verify',
    'write_file_atomic',
    'write_json_atomic',
]

MANIFEST_NAME = 'manifest.json'
_STAGING = 'staging'
_PREVIOUS = 'previous'
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
# errno values by which renameat2 says it cannot exchange here (old kernel,
# file system without the flag): use the two-rename fallback.
_NO_EXCHANGE = (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EPERM)


def write_file_atomic(path, write):
  """Writes one file whole or not at all.

  Calls ``write(f)`` on a binary temporary file beside ``path``, flushes it
  to disk and renames it onto ``path`` (atomic on one file system): a reader
  sees the previous file or the new one, never a part. On an exception the
  temporary file is removed and ``path`` is untouched.

  Args:
    path: the target file.
    write: callable taking the open binary file.
  """
  tmp = f'{path}.{os.getpid()}.tmp'
  try:
    with open(tmp, 'wb') as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_json_atomic(path, value, **options):
  """Writes ``value`` as JSON (UTF-8, final newline), whole or not at all.

  `write_file_atomic` of ``json.dumps(value, **options)`` (e.g. ``indent``,
  ``sort_keys``, ``allow_nan=False`` for strict JSON). The text is made
  before the file is opened, so a value JSON cannot hold raises and leaves
  the old file as it was.

  Args:
    path: the target file.
    value: what `json.dumps` takes.
    **options: keyword arguments of `json.dumps`.
  """
  text = json.dumps(value, **options) + '\n'
  write_file_atomic(path, lambda f: f.write(text.encode('utf-8')))


def new_run_id():
  """A fresh run id: UTC time to the second and 8 random hex digits."""
  now = datetime.datetime.now(datetime.timezone.utc)
  return f'{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}'


def _hidden_name(target, kind, run_id):
  return f'.{os.path.basename(target)}.{kind}-{run_id}'


def read_manifest(path):
  """The manifest of a committed output folder, or None when it has none.

  Args:
    path: the output folder.

  Returns:
    The decoded ``manifest.json``: a dict with ``run_id``, ``created_utc`` and
    ``files`` ({name: {'size': bytes, 'sha256': hex digest}}), or None when
    the folder holds no manifest.

  Raises:
    ValueError: if the manifest is not valid JSON of that form.
  """
  manifest_path = os.path.join(path, MANIFEST_NAME)
  try:
    with open(manifest_path, encoding='utf-8') as f:
      manifest = json.load(f)
  except FileNotFoundError:
    return None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f'{manifest_path} is not valid JSON ({e}).') from e
  if (not isinstance(manifest, dict) or
      not isinstance(manifest.get('files'), dict) or
      not isinstance(manifest.get('run_id'), str)):
    raise ValueError(f'{manifest_path} is not an output manifest (expected an '
                     'object with "run_id" and "files").')
  return manifest


def _sha256(path):
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def verify(path):
  """Checks that a folder holds exactly the complete set of its manifest.

  Args:
    path: a committed output folder.

  Returns:
    The manifest (see `read_manifest`).

  Raises:
    ValueError: if the folder has no manifest, lacks a listed file, holds an
      unlisted one, or a file's size or SHA-256 differs from the manifest.
  """
  manifest = read_manifest(path)
  if manifest is None:
    raise ValueError(f'{path} holds no {MANIFEST_NAME}; it is not a committed '
                     'output folder.')
  listed = set(manifest['files'])
  present = set(os.listdir(path)) - {MANIFEST_NAME}
  if listed != present:
    raise ValueError(f'{path} does not hold the set of its manifest: missing '
                     f'{sorted(listed - present)}, unlisted {sorted(present - listed)}.')
  for name, entry in manifest['files'].items():
    file_path = os.path.join(path, name)
    if (os.path.getsize(file_path) != entry['size'] or
        _sha256(file_path) != entry['sha256']):
      raise ValueError(f'{file_path} differs from the manifest of run '
                       f'{manifest["run_id"]} (size or SHA-256).')
  return manifest


def _nearest_existing(path):
  while not os.path.lexists(path):
    parent = os.path.dirname(path)
    if parent == path:
      break
    path = parent
  return path


def _check_target(path, overwrite, own_files):
  """Validates the target folder (see `OutputFolder`); no side effect."""
  if not path:
    raise ValueError('the output folder path is empty; expected a folder path.')
  target = os.path.realpath(os.fspath(path))
  parent = os.path.dirname(target)
  if target == parent:
    raise ValueError(f'the output folder {path} is the file-system root; '
                     'expected a folder below it.')
  if os.path.exists(target):
    if not os.path.isdir(target):
      raise ValueError(f'the output folder {path} exists and is not a folder '
                       f'(a {_kind(target)}); remove it or choose another path.')
    if os.path.ismount(target):
      raise ValueError(f'the output folder {path} is a mount point; it cannot be '
                       'replaced as a whole. Choose a folder inside it.')
    if not os.access(target, os.W_OK | os.X_OK):
      raise ValueError(f'the output folder {path} is not writable by this user.')
    entries = set(os.listdir(target))
    if entries:
      if not overwrite:
        raise ValueError(f'the output folder {path} exists and is not empty, '
                         'and overwriting is off; choose another folder or '
                         'allow overwriting.')
      manifest = read_manifest(target)
      if manifest is not None:
        foreign = sorted(entries - set(manifest['files']) - {MANIFEST_NAME})
      else:
        foreign = sorted(e for e in entries if not any(
            fnmatch.fnmatchcase(e, pattern) for pattern in own_files))
      if foreign:
        raise ValueError(
            f'the output folder {path} holds files that no earlier run wrote '
            f'there: {foreign[:10]}{" ..." if len(foreign) > 10 else ""}. A run '
            'replaces its output folder as a whole, so it will not delete them: '
            'move them away or choose another folder.')
  existing = _nearest_existing(parent)
  if not os.path.isdir(existing):
    raise ValueError(f'cannot create the output folder {path}: {existing} is a '
                     f'{_kind(existing)}, not a folder.')
  if not os.access(existing, os.W_OK | os.X_OK):
    raise ValueError(f'cannot write the output folder {path}: {existing} is not '
                     'writable by this user (a run stages its products beside '
                     'the folder).')
  return target


def _kind(path):
  """'file' or 'special file' (a FIFO, socket, device) for a non-folder."""
  return 'file' if stat.S_ISREG(os.stat(path).st_mode) else 'special file'


def _exchange(a, b):
  """Atomically swaps two paths (Linux renameat2); False where unsupported."""
  try:
    renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
  except (AttributeError, OSError):
    return False
  renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int,
                        ctypes.c_char_p, ctypes.c_uint]
  renameat2.restype = ctypes.c_int
  if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b),
               _RENAME_EXCHANGE) == 0:
    return True
  code = ctypes.get_errno()
  if code in _NO_EXCHANGE:
    return False
  raise OSError(code, os.strerror(code), a, None, b)


def _fsync_path(path, directory=False):
  fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def _remove_tree(path):
  shutil.rmtree(path, ignore_errors=True)


def _try_lock(path):
  """An fd holding an exclusive flock on a folder, or None if another has it."""
  try:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
  except OSError:
    return None
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError:
    os.close(fd)
    return None
  return fd


def _recover(target):
  """Deletes what killed runs left beside ``target``; restores a lost set.

  Returns:
    The names of the hidden folders removed or restored.
  """
  parent, name = os.path.split(target)
  handled = []
  try:
    entries = sorted(os.listdir(parent))
  except FileNotFoundError:
    return handled
  previous = [e for e in entries if e.startswith(f'.{name}.{_PREVIOUS}-')]
  if previous and not os.path.lexists(target):
    # A fallback commit was killed between its two renames: the newest
    # previous set goes back into place (run ids sort by time).
    os.rename(os.path.join(parent, previous[-1]), target)
    handled.append(previous.pop())
  for entry in previous:
    _remove_tree(os.path.join(parent, entry))
    handled.append(entry)
  for entry in entries:
    if entry.startswith(f'.{name}.{_STAGING}-'):
      path = os.path.join(parent, entry)
      fd = _try_lock(path)
      if fd is None:
        continue  # a live run is writing there
      try:
        _remove_tree(path)
      finally:
        os.close(fd)
      handled.append(entry)
  return handled


class OutputFolder:
  """A folder of products committed as a whole (see the module docstring).

  ```python
  folder = OutputFolder('out/run', own_files=['*.fits'])  # checks, no writes
  ...  # expensive work
  with folder:
    write_fits(folder.path_for('map.fits'), ..., run_id=folder.run_id)
  # here out/run holds exactly the new set, or the old one if the block raised
  ```

  Args:
    path: the target folder; its parent folders are created when the block
      is entered.
    overwrite: whether an existing non-empty target may be replaced. An
      existing empty folder is always replaced.
    run_id: the run's id (str of letters, digits, ``-``, ``_``, ``.``);
      default `new_run_id()`.
    own_files: fnmatch patterns of the files an earlier version of the job
      wrote without a manifest: such a folder may be replaced when each of
      its entries matches one.

  Raises:
    ValueError: if the target cannot be used (see the module docstring); the
      message names the path and the problem.
  """

  def __init__(self, path, overwrite=True, run_id=None, own_files=()):
    self._given = os.fspath(path)
    self._overwrite = bool(overwrite)
    self._own_files = tuple(own_files)
    self.run_id = new_run_id() if run_id is None else str(run_id)
    if not self.run_id or not all(c.isalnum() or c in '-_.' for c in self.run_id):
      raise ValueError(f'run_id must be letters, digits, "-", "_" or ".", got '
                       f'{run_id!r}.')
    self.path = _check_target(self._given, self._overwrite, self._own_files)
    self.staging = os.path.join(os.path.dirname(self.path), _hidden_name(
        self.path, _STAGING, self.run_id))
    self.recovered = []
    self._lock_fd = None
    self._files = None

  def __enter__(self):
    self.open()
    return self

  def __exit__(self, exc_type, exc, tb):
    if exc_type is None:
      self.commit()
    else:
      self.abort()
    return False

  def open(self):
    """Creates the staging folder (and the target's parents); returns it."""
    if self._files is not None:
      raise ValueError(f'the output folder {self._given} is open already.')
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    self.recovered = _recover(self.path)
    # Checked again: the target may have changed during the work.
    _check_target(self._given, self._overwrite, self._own_files)
    os.mkdir(self.staging)
    self._lock_fd = _try_lock(self.staging)
    if self._lock_fd is None:
      raise ValueError(f'could not lock the staging folder {self.staging}.')
    self._files = set()
    return self.staging

  def path_for(self, name):
    """Where to write product ``name`` (a plain file name) inside the staging folder."""
    if self._files is None:
      raise ValueError('enter the OutputFolder (with ...) before writing to it.')
    if (not name or os.path.basename(name) != name or name in ('.', '..') or
        name == MANIFEST_NAME):
      raise ValueError(f'product name must be a plain file name other than '
                       f'{MANIFEST_NAME}, got {name!r}.')
    self._files.add(name)
    return os.path.join(self.staging, name)

  def _write_manifest(self):
    missing = sorted(n for n in self._files
                     if not os.path.isfile(os.path.join(self.staging, n)))
    if missing:
      raise ValueError(f'products {missing} were announced but not written.')
    present = set(os.listdir(self.staging))
    stray = sorted(present - self._files)
    if stray:
      raise ValueError(f'the staging folder holds files not requested through '
                       f'path_for: {stray}.')
    files = {}
    for name in sorted(present):
      path = os.path.join(self.staging, name)
      _fsync_path(path)
      files[name] = {'size': os.path.getsize(path), 'sha256': _sha256(path)}
    manifest = {
        'run_id': self.run_id,
        'created_utc': datetime.datetime.now(
            datetime.timezone.utc).isoformat(timespec='seconds'),
        'files': files,
    }
    manifest_path = os.path.join(self.staging, MANIFEST_NAME)
    with open(manifest_path, 'w', encoding='utf-8') as f:
      json.dump(manifest, f, indent=2)
      f.write('\n')
      f.flush()
      os.fsync(f.fileno())
    _fsync_path(self.staging, directory=True)

  def commit(self):
    """Moves the staging folder into place as a whole; deletes the previous set."""
    if self._files is None:
      raise ValueError(f'the output folder {self._given} is not open.')
    try:
      self._write_manifest()
      _check_target(self._given, self._overwrite, self._own_files)
      parent = os.path.dirname(self.path)
      replaced = None
      try:  # a replaced folder keeps its permission bits
        os.chmod(self.staging, stat.S_IMODE(os.stat(self.path).st_mode))
      except FileNotFoundError:
        pass
      if self._overwrite and os.path.lexists(self.path):
        replaced = self._swap()
      else:
        try:
          os.rename(self.staging, self.path)  # onto nothing or an empty folder
        except OSError as e:
          if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
            raise
          if not self._overwrite:
            raise ValueError(f'the output folder {self._given} was filled by '
                             'another process during this run; nothing was '
                             'written.') from e
          replaced = self._swap()  # another run committed meanwhile
      _fsync_path(parent, directory=True)
    except BaseException:
      self.abort()
      raise
    self._release()
    if replaced is not None:
      _remove_tree(replaced)

  def _swap(self):
    """Puts the staging folder at the target; returns where the old set went."""
    if _exchange(self.staging, self.path):
      return self.staging
    previous = os.path.join(os.path.dirname(self.path), _hidden_name(
        self.path, _PREVIOUS, self.run_id))
    os.rename(self.path, previous)
    try:
      os.rename(self.staging, self.path)
    except BaseException:
      os.rename(previous, self.path)
      raise
    return previous

  def abort(self):
    """Deletes the staging folder; the target stays as it was."""
    if self._files is None:
      return
    self._release()
    _remove_tree(self.staging)

  def _release(self):
    if self._lock_fd is not None:
      os.close(self._lock_fd)
      self._lock_fd = None
    self._files = None
