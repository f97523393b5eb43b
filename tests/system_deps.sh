#!/usr/bin/env bash
# Installs the system programs the browser and deployment tests start: Debian's chromium,
# chromium-driver and redis-server. Does nothing when they are present; without root or
# sudo it says what is missing (those tests then skip, saying why).
set -u
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then sudo=""; elif command -v sudo >/dev/null 2>&1; then sudo="sudo -n"; else
  echo "system-deps: missing ${need[*]} and no root/sudo: browser/redis tests will skip." >&2; exit 0; fi
echo "system-deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
  || echo "system-deps: could not install ${need[*]}: those tests will skip." >&2
exit 0
