"""Build hook: compile the kernels ahead of time into ``classifier/_kernels`` (see
``classifier/_aot.py``), so that no run pays for importing numba and loading its cache.

If compiling fails (no C compiler, say), the package still installs: numba then
compiles the kernels at their first use, as it does for a source checkout.
"""

from __future__ import annotations

import os
import sys
import tempfile
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class KernelsBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        editable = version == "editable"
        # An editable install runs the sources in place: the module goes beside them.
        out = (os.path.join(self.root, "classifier") if editable
               else tempfile.mkdtemp(prefix="o365-traffic-kernels-"))
        sys.path.insert(0, self.root)
        try:
            from classifier._aot import build

            path = build(out)
        except Exception as exc:  # any failure: install without it
            self.app.display_warning(
                f"kernels not compiled ahead of time ({type(exc).__name__}: {exc}); "
                "numba will compile them at first use")
            return
        finally:
            sys.path.remove(self.root)
        self.app.display_info(f"kernels compiled ahead of time: {path}")
        if not editable:
            build_data["force_include"][path] = f"classifier/{os.path.basename(path)}"
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
