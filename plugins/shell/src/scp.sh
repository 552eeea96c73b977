#!/bin/sh
# phasebox: `scp` as a Testflinger job's test_cmds use it. The commands already run on the device
# under test, so a copy whose remote operands all name `$DEVICE_IP` is a local copy (a relative
# remote path is relative to the login's home, as scp's is); a copy that names any other host
# goes to the device's own scp, unchanged.
bin=$(cd "$(dirname "$0")" && pwd)
skip=0
recursive=""
preserve=""
elsewhere=0
for arg do
    if [ "$skip" = 1 ]; then
        skip=0
        continue
    fi
    case $arg in
        # Options that take the next argument (scp(1): -c -D -F -i -J -l -o -P -S -X).
        -[cDFiJloPSX]) skip=1 ;;
        -*)
            case $arg in *r*) recursive=-R ;; esac
            case $arg in *p*) preserve=-p ;; esac
            ;;
        *:*)
            host=${arg%%:*}
            host=${host##*@}
            [ -n "$DEVICE_IP" ] && [ "$host" = "$DEVICE_IP" ] || elsewhere=1
            ;;
    esac
done
if [ "$elsewhere" = 1 ]; then
    PATH=$(printf '%s' "$PATH" | sed "s#^$bin:##")
    exec scp "$@"
fi
# Every remote operand is this device: rebuild the operands as local paths for cp.
skip=0
first=1
for arg do
    if [ "$first" = 1 ]; then
        set --
        first=0
    fi
    if [ "$skip" = 1 ]; then
        skip=0
        continue
    fi
    case $arg in
        -[cDFiJloPSX]) skip=1 ;;
        -*) ;;
        *:*)
            path=${arg#*:}
            case $path in
                /*) ;;
                "") path=$HOME ;;
                *) path=$HOME/$path ;;
            esac
            set -- "$@" "$path"
            ;;
        *) set -- "$@" "$arg" ;;
    esac
done
exec cp $recursive $preserve -- "$@"
