"""Optional integrations with other packages. Nothing here is imported by ``import ntmdist``:
import a submodule by name (e.g. ``ntmdist.integrations.sbi``); each names the extra that
installs what it needs."""
