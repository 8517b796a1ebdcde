#!/usr/bin/env bash
# Install the real agent CLIs that the tests run, at the versions pinned in
# tests/realcli/package-lock.json, into tests/realcli/node_modules (git-ignored).
#
#   bash tests/realcli/install.sh        # CI runs this before the test command
#
# Idempotent: when node_modules already holds what this lockfile pins (a stamp
# with the lockfile's hash) and the binaries answer --version, it does nothing.
# After the install nothing here needs the network.
#
# npm flags, and why:
#   ci                 exactly the lockfile, nothing resolved anew.
#   --ignore-scripts   no package's install script runs. npm 11 warns that
#                      @anthropic-ai/claude-code's postinstall is "not yet covered
#                      by allowScripts" (and its docs say such scripts are blocked
#                      by default), so whether it runs depends on the npm version.
#                      All that postinstall does is put the native binary of the
#                      platform package (@anthropic-ai/claude-code-linux-x64, an
#                      optional dependency) over the placeholder bin/claude.exe; we
#                      do that below ourselves, the same way on every npm.
#   --no-audit --no-fund   no extra registry calls, quieter output.
#   --loglevel=error   hides the EBADENGINE warning: claude-code declares
#                      engines node>=22, but the native binary does not use node
#                      at all (only @openai/codex's wrapper runs on node; it
#                      works on node 20). npm does not refuse unless engine-strict.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
modules="$here/node_modules"
stamp="$modules/.orch-installed"

lock_hash() { sha256sum "$here/package-lock.json" | cut -d' ' -f1; }

# The platform package npm picked for this machine (glibc or musl, x64 or arm64).
claude_native() {
    local dir
    for dir in "$modules"/@anthropic-ai/claude-code-linux-*; do
        if [ -x "$dir/claude" ]; then
            echo "$dir/claude"
            return 0
        fi
    done
    return 1
}

is_elf() { [ "$(head -c 4 "$1" 2>/dev/null | tr -d '\0')" = $'\x7fELF' ]; }

installed() {
    [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$(lock_hash)" ] || return 1
    is_elf "$modules/@anthropic-ai/claude-code/bin/claude.exe" || return 1
    "$modules/.bin/claude" --version >/dev/null 2>&1 || return 1
    "$modules/.bin/codex" --version >/dev/null 2>&1 || return 1
}

install() {
    command -v npm >/dev/null || { echo "install.sh: npm is not installed" >&2; exit 1; }
    npm ci --prefix "$here" --ignore-scripts --no-audit --no-fund --loglevel=error
    local native target="$modules/@anthropic-ai/claude-code/bin/claude.exe"
    native="$(claude_native)" || {
        echo "install.sh: no @anthropic-ai/claude-code-linux-* package for this machine" >&2
        exit 1
    }
    # What claude-code's postinstall does: the native binary in place of the stub.
    ln -f "$native" "$target" 2>/dev/null || cp -f "$native" "$target"
    chmod +x "$target"
    lock_hash > "$stamp"
}

installed || install
echo "claude: $modules/.bin/claude ($("$modules/.bin/claude" --version))"
echo "codex:  $modules/.bin/codex ($("$modules/.bin/codex" --version))"
