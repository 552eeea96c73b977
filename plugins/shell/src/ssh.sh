#!/bin/sh
# phasebox: `ssh` as a Testflinger job's test_cmds use it. The commands already run on the device
# under test, so `ssh [options] [user@]$DEVICE_IP [command...]` runs the command right here
# (in the login's home, as sshd would, with the job's environment); any other destination goes to the
# device's own ssh, unchanged.
bin=$(cd "$(dirname "$0")" && pwd)
skip=0
count=0
dest=""
for arg do
    count=$((count + 1))
    if [ "$skip" = 1 ]; then
        skip=0
        continue
    fi
    case $arg in
        # Options that take the next argument (ssh(1): -B -b -c -D -E -e -F -I -i -J -L -l -m -O
        # -o -P -p -Q -R -S -W -w); given attached (-p22) they are one argument.
        -[BbcDEeFIiJLlmOoPpQRSWw]) skip=1 ;;
        --) ;;
        -*) ;;
        *)
            dest=$arg
            break
            ;;
    esac
done
host=${dest##*@}
if [ -n "$dest" ] && [ -n "$DEVICE_IP" ] && [ "$host" = "$DEVICE_IP" ]; then
    shift "$count"
    # A command that ssh runs starts in the login's home.
    cd "$HOME" || exit 255
    if [ "$#" -eq 0 ]; then
        exec /bin/sh
    fi
    # Like ssh, which joins its arguments with spaces and hands them to the remote shell.
    exec /bin/sh -c "$*"
fi
PATH=$(printf '%s' "$PATH" | sed "s#^$bin:##")
exec ssh "$@"
