# Sourced by scripts/test and scripts/up: installs, as root on Debian, the
# system tools network namespaces and interception need when missing —
# `ip` (iproute2), `iptables` and `iptables-restore` (iptables), and for
# the tests `setpriv` and `nsenter` (util-linux; `weft up` itself enters
# its pods with system calls). Without root or apt-get it says what is missing and goes
# on (the callers explain what then cannot run).
install_mesh_tools() {
  local caller=$1
  local missing=()
  command -v ip >/dev/null 2>&1 || missing+=(iproute2)
  { command -v iptables >/dev/null 2>&1 && command -v iptables-restore >/dev/null 2>&1; } || missing+=(iptables)
  { command -v setpriv >/dev/null 2>&1 && command -v nsenter >/dev/null 2>&1; } || missing+=(util-linux)
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "$caller: installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "$caller: ${missing[*]} missing and cannot be installed here (needs root and apt-get)" >&2
  fi
}
