"""aduan: routes Indonesian citizen complaints to a category and the responsible agency.

The import root. Its subpackages live in the repository's top-level folders (mapped by
setuptools `package-dir`): `aduan.model` (model/), `aduan.training` (training/),
`aduan.service` (service/) and `aduan.data` (data/). See ARCHITECTURE.md.
"""

from importlib.metadata import PackageNotFoundError, version
from pkgutil import extend_path

# Run from a checkout's root, Python finds this folder first (the working directory leads
# sys.path) and it holds only the root CLI: extend the package path with the installed
# `aduan` (a wheel, or the editable link tree) where the subpackages are.
__path__ = extend_path(__path__, __name__)

try:
    __version__ = version("aduan")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
