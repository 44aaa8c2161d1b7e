# shellcheck shell=bash
# Source this file (`source scripts/env.sh`) to put the tools installed by scripts/tools.sh on PATH:
# .tools/bin (helm, kubectl, promtool, lua, versioned PostgreSQL binaries) and the Python venv
# (kubernetes-validate, moto_server). Safe to source more than once.
_caduceus_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
for _caduceus_dir in "$_caduceus_root/.tools/venv/bin" "$_caduceus_root/.tools/bin"; do
    case ":$PATH:" in
        *":$_caduceus_dir:"*) ;;
        *) PATH="$_caduceus_dir:$PATH" ;;
    esac
done
export PATH
export CADUCEUS_ROOT="$_caduceus_root"
unset _caduceus_root _caduceus_dir
