"""Build step: ship the top-level `model.conf` and sample `policies/` inside the package.

The repository keeps them at the top level; the wheel carries them as `rolegate/shipped/`, where
`rolegate.config.shipped_path` finds them (a source checkout uses the top-level files).
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SHIPPED = ("model.conf", "policies")


class BuildWithShippedFiles(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the top-level files in place
        target = Path(self.build_lib) / "rolegate" / "shipped"
        target.mkdir(parents=True, exist_ok=True)
        for name in SHIPPED:
            source = ROOT / name
            if source.is_dir():
                shutil.copytree(source, target / name, dirs_exist_ok=True)
            else:
                shutil.copy2(source, target / name)


setup(cmdclass={"build_py": BuildWithShippedFiles})
