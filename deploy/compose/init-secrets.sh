#!/bin/sh
# Writes the secrets of the compose stack, random, into ./secrets (or the directory given as
# the first argument, or OUTCALL_SECRETS_DIR). Existing files are kept, so running it again
# changes nothing; delete a file to make a new one (and the volume that already uses it).
#
# The directory is mode 0700, its files 0644: compose bind-mounts them into the containers,
# where each image's own user (postgres, rabbitmq, grafana, uid 10001 of Outcall) must read them.
# Replace trunk-password with your carrier's password.
set -eu

dir="${1:-${OUTCALL_SECRETS_DIR:-$(dirname "$0")/secrets}}"
mkdir -p "$dir"
chmod 0700 "$dir"
umask 022

# n random bytes as hex, from the kernel.
rand_hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }

# Writes the file unless it exists; the value comes on standard input.
put() {
  if [ -s "$dir/$1" ]; then
    echo "kept    $dir/$1"
  else
    cat >"$dir/$1"
    chmod 0644 "$dir/$1"
    echo "created $dir/$1"
  fi
}

# Reads the first line of an existing secret (for the values that others are built from).
get() { head -n 1 "$dir/$1"; }

rand_hex 24 | put postgres-password
printf 'postgres://outcall:%s@postgres:5432/outcall\n' "$(get postgres-password)" | put database-url

rand_hex 24 | put rabbitmq-password
printf 'default_user = outcall\ndefault_pass = %s\n' "$(get rabbitmq-password)" | put rabbitmq.conf
printf 'amqp://outcall:%s@rabbitmq:5672/%%2f\n' "$(get rabbitmq-password)" | put bus-url

rand_hex 32 | put jwt-secret
# The number vault's keys (AES-256-GCM and the blind index): every node needs the same ones.
# Back this file up: losing it loses every stored number.
printf '# Outcall number keys: keep secret, keep a backup; losing them loses every number.\nindex=%s\n1=%s\ncurrent=1\n' \
  "$(rand_hex 32)" "$(rand_hex 32)" | put number-keys
rand_hex 32 | put webhook-secret
rand_hex 16 | put admin-password
rand_hex 16 | put trunk-password
rand_hex 16 | put grafana-admin-password

printf 'outcall-admin\n' | put minio-root-user
rand_hex 24 | put minio-root-password
# Outcall's own S3 user (created by minio-init, limited to the recordings bucket).
printf 'AWS_ACCESS_KEY_ID=outcall-recordings\nAWS_SECRET_ACCESS_KEY=%s\n' "$(rand_hex 24)" | put s3.env

echo "the first admin of the API is \`admin\` with the password in $dir/admin-password"
