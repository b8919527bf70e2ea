# shellcheck shell=bash
# Sourced by the cloud launchers: quote prints one shell word, single-quoted only when it needs to
# be, so --dry_run output is readable and can be pasted back into a shell.
quote() {
  if [[ "$1" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}
