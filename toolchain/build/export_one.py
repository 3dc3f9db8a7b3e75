"""`edgeq export`: one device package from a trained run, with a given or the searched configuration."""

from __future__ import annotations

from pathlib import Path

from toolchain.build.device_search import config_for
from toolchain.errors import BadInputError
from toolchain.profiles import DeviceProfile, load_profiles


def single_profile(path: Path) -> DeviceProfile:
    profiles = load_profiles([path])
    if len(profiles) != 1:
        raise BadInputError(f"{path}: expected one profile file, found {len(profiles)} profiles")
    return profiles[0]


def export_device(run_dir: Path, profile_path: Path, bits_config: Path | None, out: Path):
    """One device package from a trained run: the given BitConfig or the searched one for the profile."""
    from toolchain.adapter import Run
    from toolchain.build.branch import BRANCH, MERGED
    from toolchain.build.device import DeviceContext, package_device

    profile = single_profile(profile_path)
    run = Run.load(run_dir)
    config = config_for(run, profile, bits_config)
    ctx = DeviceContext(run, f"fine-tuned model of {run.run_dir.name}", front_svg=None)
    branch = config.branch_rank is not None
    variant = {"weights": BRANCH if branch else MERGED, "rank": config.branch_rank if branch else run.settings.rank}
    return package_device(ctx, profile, config, variant, out)
