"""Checks that BUILD declares the imports of tfp_massmap: `make bazel-check`.

Reads the py_library and py_test targets with `bazel query` and the imports
of their Python sources (also those inside functions) and reports, one per
line:
  - a tfp_massmap module (or TFDS builder) with no py_library of its own;
  - an import of a tfp_massmap module that a py_library finds neither in its
    own srcs nor in those of a direct dep (strict deps, as in TFP), or that
    a py_test finds nowhere in its deps (it would fail under Bazel).
Exits 1 if anything is reported. Takes a few seconds; Bazel builds nothing.
"""

import ast
import pathlib
import subprocess
import sys
import xml.etree.ElementTree as ElementTree

_ROOT = pathlib.Path(__file__).resolve().parents[1]
_PACKAGE = 'tfp_massmap'
# setup.py installs the top-level datasets/ folder as tfp_massmap.datasets.
_PACKAGE_DIRS = {_PACKAGE + '.datasets': 'datasets', _PACKAGE: _PACKAGE}


def _query_targets():
  """{label: (kind, srcs, direct deps)} of the workspace's Python targets."""
  xml = subprocess.run(
      ['bazel', 'query', '--output=xml', 'kind("py_(library|test)", //:*)'],
      cwd=_ROOT, check=True, capture_output=True, text=True).stdout
  targets = {}
  for rule in ElementTree.fromstring(xml).iter('rule'):
    lists = {
        element.get('name'): [label.get('value') for label in element]
        for element in rule.findall('list')
    }
    srcs = {label.split(':', 1)[1] for label in lists.get('srcs', [])}
    targets[rule.get('name')] = (rule.get('class'), srcs,
                                 lists.get('deps', []))
  return targets


def _module_file(module):
  """The source file of a tfp_massmap module name, or None."""
  for prefix, folder in sorted(_PACKAGE_DIRS.items(), reverse=True):
    if module == prefix or module.startswith(prefix + '.'):
      parts = [folder] + module[len(prefix):].split('.')[1:]
      for candidate in ('/'.join(parts) + '.py',
                        '/'.join(parts + ['__init__.py'])):
        if (_ROOT / candidate).is_file():
          return candidate
      return None
  return None


def _imported_files(src):
  """Files of the tfp_massmap modules that the source file `src` imports."""
  tree = ast.parse((_ROOT / src).read_text(encoding='utf-8'), src)
  files = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      modules = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0:
      # `from a import b` imports module a.b when that is a module, else a.
      modules = []
      for alias in node.names:
        submodule = node.module + '.' + alias.name
        modules.append(submodule if _module_file(submodule) else node.module)
    else:
      continue
    files.update(f for f in map(_module_file, modules) if f)
  return files


def find_problems():
  """The problems found, as lines of text."""
  targets = _query_targets()
  owners = {}
  for label, (kind, srcs, _) in targets.items():
    if kind == 'py_library':
      for src in srcs:
        owners.setdefault(src, []).append(label)
  problems = []
  modules = sorted(
      str(path.relative_to(_ROOT))
      for folder in _PACKAGE_DIRS.values()
      for path in (_ROOT / folder).rglob('*.py')
      if not path.name.endswith('_test.py') and 'dummy_data' not in path.parts)
  for module in modules:
    if module not in owners:
      problems.append(f'{module}: no py_library in BUILD has it in srcs')
    elif len(owners[module]) > 1:
      problems.append(f'{module}: in the srcs of {", ".join(owners[module])}')
  for label, (kind, srcs, deps) in sorted(targets.items()):
    visible = set(srcs)
    pending = list(deps)
    seen = set()
    while pending:
      dep = pending.pop()
      if dep in seen or dep not in targets:
        continue
      seen.add(dep)
      visible.update(targets[dep][1])
      if kind == 'py_test':
        pending.extend(targets[dep][2])
    where = ('its deps' if kind == 'py_test' else
             'its srcs or those of a direct dep')
    for src in sorted(s for s in srcs if s.endswith('.py')):
      for imported in sorted(_imported_files(src) - visible):
        problems.append(f'{label}: {src} imports {imported}, not in {where}')
  return problems


def main():
  """Prints every layering problem of BUILD; exits 1 if there is one."""
  problems = find_problems()
  for problem in problems:
    print(problem)
  print(f'check_layering: {len(problems)} problem(s)')
  return 1 if problems else 0


if __name__ == '__main__':
  sys.exit(main())
