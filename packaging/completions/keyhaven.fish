# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_keyhaven_global_optspecs
    string join \n socket= autostart allow-daemon-uid= h/help V/version
end

function __fish_keyhaven_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_keyhaven_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_keyhaven_using_subcommand
    set -l cmd (__fish_keyhaven_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c keyhaven -n "__fish_keyhaven_needs_command" -l socket -d 'Socket of the daemon [env: KEYHAVEN_SOCKET; default: $XDG_RUNTIME_DIR/keyhaven/keyhaven.sock]' -r -F
complete -c keyhaven -n "__fish_keyhaven_needs_command" -l allow-daemon-uid -d 'Also trust a daemon running as this uid. Only for a daemon that is meant to serve you from another account; without it, a socket served by another user is refused before anything is sent (exit 9)' -r
complete -c keyhaven -n "__fish_keyhaven_needs_command" -l autostart -d 'Start keyhavend if it is not running (unless a systemd socket unit is enabled) [env: KEYHAVEN_AUTOSTART=1]'
complete -c keyhaven -n "__fish_keyhaven_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c keyhaven -n "__fish_keyhaven_needs_command" -s V -l version -d 'Print version'
complete -c keyhaven -n "__fish_keyhaven_needs_command" -f -a "store" -d 'Store a credential. The secret is read from stdin (one trailing newline is dropped) or from --secret-file; never from the command line'
complete -c keyhaven -n "__fish_keyhaven_needs_command" -f -a "get" -d 'Print a credential\'s secret to stdout'
complete -c keyhaven -n "__fish_keyhaven_needs_command" -f -a "delete" -d 'Delete a credential'
complete -c keyhaven -n "__fish_keyhaven_needs_command" -f -a "list" -d 'List credentials (metadata only, never secrets)'
complete -c keyhaven -n "__fish_keyhaven_needs_command" -f -a "watch" -d 'Print changes as they happen, one line each (never secrets)'
complete -c keyhaven -n "__fish_keyhaven_needs_command" -f -a "logout" -d 'Delete every credential of a provider and server (and user), at once'
complete -c keyhaven -n "__fish_keyhaven_needs_command" -f -a "audit" -d 'Show the audit log: who read, wrote or was refused what'
complete -c keyhaven -n "__fish_keyhaven_needs_command" -f -a "doctor" -d 'Explain where the data key is kept, what that protects against, and how to do better'
complete -c keyhaven -n "__fish_keyhaven_needs_command" -f -a "key" -d 'Manage the data key'
complete -c keyhaven -n "__fish_keyhaven_needs_command" -f -a "import" -d 'Bring in tokens from where apps kept them before keyhaven. Sources are only read (except `reel-db --wipe-source`); re-running is harmless'
complete -c keyhaven -n "__fish_keyhaven_needs_command" -f -a "backup" -d 'Take a sealed snapshot of the store (admin access) and write it to a file (0600, complete or absent). It opens only with the same data key'
complete -c keyhaven -n "__fish_keyhaven_needs_command" -f -a "export" -d 'Write every credential (or those matching the filters) with its metadata to an age file encrypted to a passphrase (admin access)'
complete -c keyhaven -n "__fish_keyhaven_needs_command" -f -a "restore" -d 'Restore from a snapshot or an export (admin access). A stored credential with a newer revision is kept unless --overwrite. Exit 0: all restored or unchanged; 20: some skipped; 21: failed'
complete -c keyhaven -n "__fish_keyhaven_needs_command" -f -a "status" -d 'Show the daemon\'s version, protocol, pid, store and key tier'
complete -c keyhaven -n "__fish_keyhaven_needs_command" -f -a "completions" -d 'Print a shell completion script (bash, zsh, fish, ...) to stdout'
complete -c keyhaven -n "__fish_keyhaven_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand store" -l secret-file -d 'Read the secret from this file instead of stdin' -r -F
complete -c keyhaven -n "__fish_keyhaven_using_subcommand store" -l label -d 'A label for people, e.g. "Living-room Jellyfin"' -r
complete -c keyhaven -n "__fish_keyhaven_using_subcommand store" -l attr -d 'A non-secret attribute, e.g. server_url=https://jf.example.org (repeat for more). Given attributes replace the stored ones; without --attr they are kept' -r
complete -c keyhaven -n "__fish_keyhaven_using_subcommand store" -l expires-in -d 'Expire after this many seconds' -r
complete -c keyhaven -n "__fish_keyhaven_using_subcommand store" -l if-revision -d 'Only if it is still at this revision (compare-and-swap)' -r
complete -c keyhaven -n "__fish_keyhaven_using_subcommand store" -l socket -d 'Socket of the daemon [env: KEYHAVEN_SOCKET; default: $XDG_RUNTIME_DIR/keyhaven/keyhaven.sock]' -r -F
complete -c keyhaven -n "__fish_keyhaven_using_subcommand store" -l allow-daemon-uid -d 'Also trust a daemon running as this uid. Only for a daemon that is meant to serve you from another account; without it, a socket served by another user is refused before anything is sent (exit 9)' -r
complete -c keyhaven -n "__fish_keyhaven_using_subcommand store" -l clear-attrs -d 'Remove every stored attribute'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand store" -l if-absent -d 'Only if it does not exist yet'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand store" -l autostart -d 'Start keyhavend if it is not running (unless a systemd socket unit is enabled) [env: KEYHAVEN_AUTOSTART=1]'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand store" -s h -l help -d 'Print help'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand get" -l socket -d 'Socket of the daemon [env: KEYHAVEN_SOCKET; default: $XDG_RUNTIME_DIR/keyhaven/keyhaven.sock]' -r -F
complete -c keyhaven -n "__fish_keyhaven_using_subcommand get" -l allow-daemon-uid -d 'Also trust a daemon running as this uid. Only for a daemon that is meant to serve you from another account; without it, a socket served by another user is refused before anything is sent (exit 9)' -r
complete -c keyhaven -n "__fish_keyhaven_using_subcommand get" -s n -l no-newline -d 'Do not print a newline after the secret'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand get" -l autostart -d 'Start keyhavend if it is not running (unless a systemd socket unit is enabled) [env: KEYHAVEN_AUTOSTART=1]'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand get" -s h -l help -d 'Print help'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand delete" -l if-revision -d 'Only if it is still at this revision' -r
complete -c keyhaven -n "__fish_keyhaven_using_subcommand delete" -l socket -d 'Socket of the daemon [env: KEYHAVEN_SOCKET; default: $XDG_RUNTIME_DIR/keyhaven/keyhaven.sock]' -r -F
complete -c keyhaven -n "__fish_keyhaven_using_subcommand delete" -l allow-daemon-uid -d 'Also trust a daemon running as this uid. Only for a daemon that is meant to serve you from another account; without it, a socket served by another user is refused before anything is sent (exit 9)' -r
complete -c keyhaven -n "__fish_keyhaven_using_subcommand delete" -l autostart -d 'Start keyhavend if it is not running (unless a systemd socket unit is enabled) [env: KEYHAVEN_AUTOSTART=1]'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand delete" -s h -l help -d 'Print help'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand list" -l provider -d 'Only this provider' -r
complete -c keyhaven -n "__fish_keyhaven_using_subcommand list" -l server -d 'Only this server id (\'\' for empty)' -r
complete -c keyhaven -n "__fish_keyhaven_using_subcommand list" -l user -d 'Only this user id (\'\' for empty)' -r
complete -c keyhaven -n "__fish_keyhaven_using_subcommand list" -l attr -d 'Only credentials with this attribute value (repeat: all must match)' -r
complete -c keyhaven -n "__fish_keyhaven_using_subcommand list" -l socket -d 'Socket of the daemon [env: KEYHAVEN_SOCKET; default: $XDG_RUNTIME_DIR/keyhaven/keyhaven.sock]' -r -F
complete -c keyhaven -n "__fish_keyhaven_using_subcommand list" -l allow-daemon-uid -d 'Also trust a daemon running as this uid. Only for a daemon that is meant to serve you from another account; without it, a socket served by another user is refused before anything is sent (exit 9)' -r
complete -c keyhaven -n "__fish_keyhaven_using_subcommand list" -l json -d 'JSON output (an array of objects)'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand list" -l autostart -d 'Start keyhavend if it is not running (unless a systemd socket unit is enabled) [env: KEYHAVEN_AUTOSTART=1]'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand list" -s h -l help -d 'Print help'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand watch" -l provider -d 'Only this provider' -r
complete -c keyhaven -n "__fish_keyhaven_using_subcommand watch" -l server -d 'Only this server id (\'\' for empty)' -r
complete -c keyhaven -n "__fish_keyhaven_using_subcommand watch" -l user -d 'Only this user id (\'\' for empty)' -r
complete -c keyhaven -n "__fish_keyhaven_using_subcommand watch" -l attr -d 'Only credentials with this attribute value (repeat: all must match)' -r
complete -c keyhaven -n "__fish_keyhaven_using_subcommand watch" -l count -d 'Exit after this many events' -r
complete -c keyhaven -n "__fish_keyhaven_using_subcommand watch" -l socket -d 'Socket of the daemon [env: KEYHAVEN_SOCKET; default: $XDG_RUNTIME_DIR/keyhaven/keyhaven.sock]' -r -F
complete -c keyhaven -n "__fish_keyhaven_using_subcommand watch" -l allow-daemon-uid -d 'Also trust a daemon running as this uid. Only for a daemon that is meant to serve you from another account; without it, a socket served by another user is refused before anything is sent (exit 9)' -r
complete -c keyhaven -n "__fish_keyhaven_using_subcommand watch" -l snapshot -d 'Print the current credentials first (SNAPSHOT ... SYNCED)'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand watch" -l json -d 'One JSON object per line'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand watch" -l autostart -d 'Start keyhavend if it is not running (unless a systemd socket unit is enabled) [env: KEYHAVEN_AUTOSTART=1]'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand watch" -s h -l help -d 'Print help'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand logout" -l socket -d 'Socket of the daemon [env: KEYHAVEN_SOCKET; default: $XDG_RUNTIME_DIR/keyhaven/keyhaven.sock]' -r -F
complete -c keyhaven -n "__fish_keyhaven_using_subcommand logout" -l allow-daemon-uid -d 'Also trust a daemon running as this uid. Only for a daemon that is meant to serve you from another account; without it, a socket served by another user is refused before anything is sent (exit 9)' -r
complete -c keyhaven -n "__fish_keyhaven_using_subcommand logout" -l autostart -d 'Start keyhavend if it is not running (unless a systemd socket unit is enabled) [env: KEYHAVEN_AUTOSTART=1]'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand logout" -s h -l help -d 'Print help'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand audit" -l key -d 'Only this credential: provider::server_id::user_id[::token_type]' -r
complete -c keyhaven -n "__fish_keyhaven_using_subcommand audit" -l program -d 'Only programs whose path or app id contains this' -r
complete -c keyhaven -n "__fish_keyhaven_using_subcommand audit" -l last -d 'Only the last DURATION, e.g. 30s, 15m, 2h, 7d' -r
complete -c keyhaven -n "__fish_keyhaven_using_subcommand audit" -l limit -d 'At most this many entries (newest first)' -r
complete -c keyhaven -n "__fish_keyhaven_using_subcommand audit" -l socket -d 'Socket of the daemon [env: KEYHAVEN_SOCKET; default: $XDG_RUNTIME_DIR/keyhaven/keyhaven.sock]' -r -F
complete -c keyhaven -n "__fish_keyhaven_using_subcommand audit" -l allow-daemon-uid -d 'Also trust a daemon running as this uid. Only for a daemon that is meant to serve you from another account; without it, a socket served by another user is refused before anything is sent (exit 9)' -r
complete -c keyhaven -n "__fish_keyhaven_using_subcommand audit" -l json -d 'JSON output (an array of objects)'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand audit" -l autostart -d 'Start keyhavend if it is not running (unless a systemd socket unit is enabled) [env: KEYHAVEN_AUTOSTART=1]'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand audit" -s h -l help -d 'Print help'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand doctor" -l socket -d 'Socket of the daemon [env: KEYHAVEN_SOCKET; default: $XDG_RUNTIME_DIR/keyhaven/keyhaven.sock]' -r -F
complete -c keyhaven -n "__fish_keyhaven_using_subcommand doctor" -l allow-daemon-uid -d 'Also trust a daemon running as this uid. Only for a daemon that is meant to serve you from another account; without it, a socket served by another user is refused before anything is sent (exit 9)' -r
complete -c keyhaven -n "__fish_keyhaven_using_subcommand doctor" -l autostart -d 'Start keyhavend if it is not running (unless a systemd socket unit is enabled) [env: KEYHAVEN_AUTOSTART=1]'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand doctor" -s h -l help -d 'Print help'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand key; and not __fish_seen_subcommand_from rotate move help" -l socket -d 'Socket of the daemon [env: KEYHAVEN_SOCKET; default: $XDG_RUNTIME_DIR/keyhaven/keyhaven.sock]' -r -F
complete -c keyhaven -n "__fish_keyhaven_using_subcommand key; and not __fish_seen_subcommand_from rotate move help" -l allow-daemon-uid -d 'Also trust a daemon running as this uid. Only for a daemon that is meant to serve you from another account; without it, a socket served by another user is refused before anything is sent (exit 9)' -r
complete -c keyhaven -n "__fish_keyhaven_using_subcommand key; and not __fish_seen_subcommand_from rotate move help" -l autostart -d 'Start keyhavend if it is not running (unless a systemd socket unit is enabled) [env: KEYHAVEN_AUTOSTART=1]'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand key; and not __fish_seen_subcommand_from rotate move help" -s h -l help -d 'Print help'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand key; and not __fish_seen_subcommand_from rotate move help" -f -a "rotate" -d 'Re-seal every credential under a new data key (crash-safe)'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand key; and not __fish_seen_subcommand_from rotate move help" -f -a "move" -d 'Move the data key to another tier'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand key; and not __fish_seen_subcommand_from rotate move help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand key; and __fish_seen_subcommand_from rotate" -l socket -d 'Socket of the daemon [env: KEYHAVEN_SOCKET; default: $XDG_RUNTIME_DIR/keyhaven/keyhaven.sock]' -r -F
complete -c keyhaven -n "__fish_keyhaven_using_subcommand key; and __fish_seen_subcommand_from rotate" -l allow-daemon-uid -d 'Also trust a daemon running as this uid. Only for a daemon that is meant to serve you from another account; without it, a socket served by another user is refused before anything is sent (exit 9)' -r
complete -c keyhaven -n "__fish_keyhaven_using_subcommand key; and __fish_seen_subcommand_from rotate" -l autostart -d 'Start keyhavend if it is not running (unless a systemd socket unit is enabled) [env: KEYHAVEN_AUTOSTART=1]'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand key; and __fish_seen_subcommand_from rotate" -s h -l help -d 'Print help'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand key; and __fish_seen_subcommand_from move" -l to -d 'keyring or file' -r -f -a "keyring\t''
file\t''"
complete -c keyhaven -n "__fish_keyhaven_using_subcommand key; and __fish_seen_subcommand_from move" -l socket -d 'Socket of the daemon [env: KEYHAVEN_SOCKET; default: $XDG_RUNTIME_DIR/keyhaven/keyhaven.sock]' -r -F
complete -c keyhaven -n "__fish_keyhaven_using_subcommand key; and __fish_seen_subcommand_from move" -l allow-daemon-uid -d 'Also trust a daemon running as this uid. Only for a daemon that is meant to serve you from another account; without it, a socket served by another user is refused before anything is sent (exit 9)' -r
complete -c keyhaven -n "__fish_keyhaven_using_subcommand key; and __fish_seen_subcommand_from move" -l autostart -d 'Start keyhavend if it is not running (unless a systemd socket unit is enabled) [env: KEYHAVEN_AUTOSTART=1]'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand key; and __fish_seen_subcommand_from move" -s h -l help -d 'Print help'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand key; and __fish_seen_subcommand_from help" -f -a "rotate" -d 'Re-seal every credential under a new data key (crash-safe)'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand key; and __fish_seen_subcommand_from help" -f -a "move" -d 'Move the data key to another tier'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand key; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand import; and not __fish_seen_subcommand_from keyring reel-db json help" -l socket -d 'Socket of the daemon [env: KEYHAVEN_SOCKET; default: $XDG_RUNTIME_DIR/keyhaven/keyhaven.sock]' -r -F
complete -c keyhaven -n "__fish_keyhaven_using_subcommand import; and not __fish_seen_subcommand_from keyring reel-db json help" -l allow-daemon-uid -d 'Also trust a daemon running as this uid. Only for a daemon that is meant to serve you from another account; without it, a socket served by another user is refused before anything is sent (exit 9)' -r
complete -c keyhaven -n "__fish_keyhaven_using_subcommand import; and not __fish_seen_subcommand_from keyring reel-db json help" -l autostart -d 'Start keyhavend if it is not running (unless a systemd socket unit is enabled) [env: KEYHAVEN_AUTOSTART=1]'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand import; and not __fish_seen_subcommand_from keyring reel-db json help" -s h -l help -d 'Print help'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand import; and not __fish_seen_subcommand_from keyring reel-db json help" -f -a "keyring" -d 'JellyTau\'s or Reel\'s OS keyring entries. Without ids, every entry of that app the Secret Service has is listed and imported. The keyring entries are only read'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand import; and not __fish_seen_subcommand_from keyring reel-db json help" -f -a "reel-db" -d 'Reel\'s database: every row of its auth_tokens table'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand import; and not __fish_seen_subcommand_from keyring reel-db json help" -f -a "json" -d 'JSON lines on stdin: {"provider", "server_id", "user_id", "token_type", "secret", "label"?, "expires_at"? (Unix seconds)}'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand import; and not __fish_seen_subcommand_from keyring reel-db json help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand import; and __fish_seen_subcommand_from keyring" -l server -d 'JellyTau: the server id' -r
complete -c keyhaven -n "__fish_keyhaven_using_subcommand import; and __fish_seen_subcommand_from keyring" -l user -d 'JellyTau: the user id' -r
complete -c keyhaven -n "__fish_keyhaven_using_subcommand import; and __fish_seen_subcommand_from keyring" -l source -d 'Reel: the source id, e.g. plex_123' -r
complete -c keyhaven -n "__fish_keyhaven_using_subcommand import; and __fish_seen_subcommand_from keyring" -l socket -d 'Socket of the daemon [env: KEYHAVEN_SOCKET; default: $XDG_RUNTIME_DIR/keyhaven/keyhaven.sock]' -r -F
complete -c keyhaven -n "__fish_keyhaven_using_subcommand import; and __fish_seen_subcommand_from keyring" -l allow-daemon-uid -d 'Also trust a daemon running as this uid. Only for a daemon that is meant to serve you from another account; without it, a socket served by another user is refused before anything is sent (exit 9)' -r
complete -c keyhaven -n "__fish_keyhaven_using_subcommand import; and __fish_seen_subcommand_from keyring" -l jellytau -d 'JellyTau\'s entries (jellytau::SERVER::USER::access_token)'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand import; and __fish_seen_subcommand_from keyring" -l reel -d 'Reel\'s entries (service reel.SOURCE or gnome-reel.SOURCE)'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand import; and __fish_seen_subcommand_from keyring" -l dry-run -d 'Only say what would happen'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand import; and __fish_seen_subcommand_from keyring" -l overwrite -d 'Replace a different value already in the store'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand import; and __fish_seen_subcommand_from keyring" -l json -d 'One JSON object per line, then a summary object'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand import; and __fish_seen_subcommand_from keyring" -l autostart -d 'Start keyhavend if it is not running (unless a systemd socket unit is enabled) [env: KEYHAVEN_AUTOSTART=1]'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand import; and __fish_seen_subcommand_from keyring" -s h -l help -d 'Print help'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand import; and __fish_seen_subcommand_from reel-db" -l socket -d 'Socket of the daemon [env: KEYHAVEN_SOCKET; default: $XDG_RUNTIME_DIR/keyhaven/keyhaven.sock]' -r -F
complete -c keyhaven -n "__fish_keyhaven_using_subcommand import; and __fish_seen_subcommand_from reel-db" -l allow-daemon-uid -d 'Also trust a daemon running as this uid. Only for a daemon that is meant to serve you from another account; without it, a socket served by another user is refused before anything is sent (exit 9)' -r
complete -c keyhaven -n "__fish_keyhaven_using_subcommand import; and __fish_seen_subcommand_from reel-db" -l wipe-source -d 'After every row is verified in the store, delete the imported rows from the file'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand import; and __fish_seen_subcommand_from reel-db" -l dry-run -d 'Only say what would happen'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand import; and __fish_seen_subcommand_from reel-db" -l overwrite -d 'Replace a different value already in the store'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand import; and __fish_seen_subcommand_from reel-db" -l json -d 'One JSON object per line, then a summary object'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand import; and __fish_seen_subcommand_from reel-db" -l autostart -d 'Start keyhavend if it is not running (unless a systemd socket unit is enabled) [env: KEYHAVEN_AUTOSTART=1]'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand import; and __fish_seen_subcommand_from reel-db" -s h -l help -d 'Print help'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand import; and __fish_seen_subcommand_from json" -l socket -d 'Socket of the daemon [env: KEYHAVEN_SOCKET; default: $XDG_RUNTIME_DIR/keyhaven/keyhaven.sock]' -r -F
complete -c keyhaven -n "__fish_keyhaven_using_subcommand import; and __fish_seen_subcommand_from json" -l allow-daemon-uid -d 'Also trust a daemon running as this uid. Only for a daemon that is meant to serve you from another account; without it, a socket served by another user is refused before anything is sent (exit 9)' -r
complete -c keyhaven -n "__fish_keyhaven_using_subcommand import; and __fish_seen_subcommand_from json" -l dry-run -d 'Only say what would happen'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand import; and __fish_seen_subcommand_from json" -l overwrite -d 'Replace a different value already in the store'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand import; and __fish_seen_subcommand_from json" -l json -d 'One JSON object per line, then a summary object'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand import; and __fish_seen_subcommand_from json" -l autostart -d 'Start keyhavend if it is not running (unless a systemd socket unit is enabled) [env: KEYHAVEN_AUTOSTART=1]'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand import; and __fish_seen_subcommand_from json" -s h -l help -d 'Print help'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand import; and __fish_seen_subcommand_from help" -f -a "keyring" -d 'JellyTau\'s or Reel\'s OS keyring entries. Without ids, every entry of that app the Secret Service has is listed and imported. The keyring entries are only read'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand import; and __fish_seen_subcommand_from help" -f -a "reel-db" -d 'Reel\'s database: every row of its auth_tokens table'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand import; and __fish_seen_subcommand_from help" -f -a "json" -d 'JSON lines on stdin: {"provider", "server_id", "user_id", "token_type", "secret", "label"?, "expires_at"? (Unix seconds)}'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand import; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand backup" -l to -d 'The file to write [default: keyhaven-snapshot-TIME.khsnap here]' -r -F
complete -c keyhaven -n "__fish_keyhaven_using_subcommand backup" -l manifest -d 'Print the manifest of snapshot FILE (no key needed) instead' -r -F
complete -c keyhaven -n "__fish_keyhaven_using_subcommand backup" -l socket -d 'Socket of the daemon [env: KEYHAVEN_SOCKET; default: $XDG_RUNTIME_DIR/keyhaven/keyhaven.sock]' -r -F
complete -c keyhaven -n "__fish_keyhaven_using_subcommand backup" -l allow-daemon-uid -d 'Also trust a daemon running as this uid. Only for a daemon that is meant to serve you from another account; without it, a socket served by another user is refused before anything is sent (exit 9)' -r
complete -c keyhaven -n "__fish_keyhaven_using_subcommand backup" -l autostart -d 'Start keyhavend if it is not running (unless a systemd socket unit is enabled) [env: KEYHAVEN_AUTOSTART=1]'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand backup" -s h -l help -d 'Print help'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand export" -l to -d 'The file to write [default: keyhaven-export-TIME.age here]' -r -F
complete -c keyhaven -n "__fish_keyhaven_using_subcommand export" -l provider -d 'Only this provider' -r
complete -c keyhaven -n "__fish_keyhaven_using_subcommand export" -l server -d 'Only this server id (\'\' for empty)' -r
complete -c keyhaven -n "__fish_keyhaven_using_subcommand export" -l user -d 'Only this user id (\'\' for empty)' -r
complete -c keyhaven -n "__fish_keyhaven_using_subcommand export" -l attr -d 'Only credentials with this attribute value (repeat: all must match)' -r
complete -c keyhaven -n "__fish_keyhaven_using_subcommand export" -l socket -d 'Socket of the daemon [env: KEYHAVEN_SOCKET; default: $XDG_RUNTIME_DIR/keyhaven/keyhaven.sock]' -r -F
complete -c keyhaven -n "__fish_keyhaven_using_subcommand export" -l allow-daemon-uid -d 'Also trust a daemon running as this uid. Only for a daemon that is meant to serve you from another account; without it, a socket served by another user is refused before anything is sent (exit 9)' -r
complete -c keyhaven -n "__fish_keyhaven_using_subcommand export" -l passphrase-stdin -d 'Read the passphrase from the first line of stdin instead of asking on the terminal'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand export" -l autostart -d 'Start keyhavend if it is not running (unless a systemd socket unit is enabled) [env: KEYHAVEN_AUTOSTART=1]'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand export" -s h -l help -d 'Print help'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand restore" -l socket -d 'Socket of the daemon [env: KEYHAVEN_SOCKET; default: $XDG_RUNTIME_DIR/keyhaven/keyhaven.sock]' -r -F
complete -c keyhaven -n "__fish_keyhaven_using_subcommand restore" -l allow-daemon-uid -d 'Also trust a daemon running as this uid. Only for a daemon that is meant to serve you from another account; without it, a socket served by another user is refused before anything is sent (exit 9)' -r
complete -c keyhaven -n "__fish_keyhaven_using_subcommand restore" -l dry-run -d 'Say what would happen; write nothing'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand restore" -l overwrite -d 'Replace stored credentials even when their revision is newer'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand restore" -l passphrase-stdin -d 'Read an export\'s passphrase from the first line of stdin'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand restore" -l inspect -d 'Only print what FILE is (a snapshot\'s manifest), no key needed'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand restore" -l autostart -d 'Start keyhavend if it is not running (unless a systemd socket unit is enabled) [env: KEYHAVEN_AUTOSTART=1]'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand restore" -s h -l help -d 'Print help'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand status" -l socket -d 'Socket of the daemon [env: KEYHAVEN_SOCKET; default: $XDG_RUNTIME_DIR/keyhaven/keyhaven.sock]' -r -F
complete -c keyhaven -n "__fish_keyhaven_using_subcommand status" -l allow-daemon-uid -d 'Also trust a daemon running as this uid. Only for a daemon that is meant to serve you from another account; without it, a socket served by another user is refused before anything is sent (exit 9)' -r
complete -c keyhaven -n "__fish_keyhaven_using_subcommand status" -l json -d 'JSON output'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand status" -l autostart -d 'Start keyhavend if it is not running (unless a systemd socket unit is enabled) [env: KEYHAVEN_AUTOSTART=1]'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand status" -s h -l help -d 'Print help'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand completions" -l socket -d 'Socket of the daemon [env: KEYHAVEN_SOCKET; default: $XDG_RUNTIME_DIR/keyhaven/keyhaven.sock]' -r -F
complete -c keyhaven -n "__fish_keyhaven_using_subcommand completions" -l allow-daemon-uid -d 'Also trust a daemon running as this uid. Only for a daemon that is meant to serve you from another account; without it, a socket served by another user is refused before anything is sent (exit 9)' -r
complete -c keyhaven -n "__fish_keyhaven_using_subcommand completions" -l autostart -d 'Start keyhavend if it is not running (unless a systemd socket unit is enabled) [env: KEYHAVEN_AUTOSTART=1]'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand completions" -s h -l help -d 'Print help'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand help; and not __fish_seen_subcommand_from store get delete list watch logout audit doctor key import backup export restore status completions help" -f -a "store" -d 'Store a credential. The secret is read from stdin (one trailing newline is dropped) or from --secret-file; never from the command line'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand help; and not __fish_seen_subcommand_from store get delete list watch logout audit doctor key import backup export restore status completions help" -f -a "get" -d 'Print a credential\'s secret to stdout'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand help; and not __fish_seen_subcommand_from store get delete list watch logout audit doctor key import backup export restore status completions help" -f -a "delete" -d 'Delete a credential'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand help; and not __fish_seen_subcommand_from store get delete list watch logout audit doctor key import backup export restore status completions help" -f -a "list" -d 'List credentials (metadata only, never secrets)'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand help; and not __fish_seen_subcommand_from store get delete list watch logout audit doctor key import backup export restore status completions help" -f -a "watch" -d 'Print changes as they happen, one line each (never secrets)'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand help; and not __fish_seen_subcommand_from store get delete list watch logout audit doctor key import backup export restore status completions help" -f -a "logout" -d 'Delete every credential of a provider and server (and user), at once'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand help; and not __fish_seen_subcommand_from store get delete list watch logout audit doctor key import backup export restore status completions help" -f -a "audit" -d 'Show the audit log: who read, wrote or was refused what'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand help; and not __fish_seen_subcommand_from store get delete list watch logout audit doctor key import backup export restore status completions help" -f -a "doctor" -d 'Explain where the data key is kept, what that protects against, and how to do better'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand help; and not __fish_seen_subcommand_from store get delete list watch logout audit doctor key import backup export restore status completions help" -f -a "key" -d 'Manage the data key'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand help; and not __fish_seen_subcommand_from store get delete list watch logout audit doctor key import backup export restore status completions help" -f -a "import" -d 'Bring in tokens from where apps kept them before keyhaven. Sources are only read (except `reel-db --wipe-source`); re-running is harmless'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand help; and not __fish_seen_subcommand_from store get delete list watch logout audit doctor key import backup export restore status completions help" -f -a "backup" -d 'Take a sealed snapshot of the store (admin access) and write it to a file (0600, complete or absent). It opens only with the same data key'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand help; and not __fish_seen_subcommand_from store get delete list watch logout audit doctor key import backup export restore status completions help" -f -a "export" -d 'Write every credential (or those matching the filters) with its metadata to an age file encrypted to a passphrase (admin access)'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand help; and not __fish_seen_subcommand_from store get delete list watch logout audit doctor key import backup export restore status completions help" -f -a "restore" -d 'Restore from a snapshot or an export (admin access). A stored credential with a newer revision is kept unless --overwrite. Exit 0: all restored or unchanged; 20: some skipped; 21: failed'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand help; and not __fish_seen_subcommand_from store get delete list watch logout audit doctor key import backup export restore status completions help" -f -a "status" -d 'Show the daemon\'s version, protocol, pid, store and key tier'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand help; and not __fish_seen_subcommand_from store get delete list watch logout audit doctor key import backup export restore status completions help" -f -a "completions" -d 'Print a shell completion script (bash, zsh, fish, ...) to stdout'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand help; and not __fish_seen_subcommand_from store get delete list watch logout audit doctor key import backup export restore status completions help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand help; and __fish_seen_subcommand_from key" -f -a "rotate" -d 'Re-seal every credential under a new data key (crash-safe)'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand help; and __fish_seen_subcommand_from key" -f -a "move" -d 'Move the data key to another tier'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand help; and __fish_seen_subcommand_from import" -f -a "keyring" -d 'JellyTau\'s or Reel\'s OS keyring entries. Without ids, every entry of that app the Secret Service has is listed and imported. The keyring entries are only read'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand help; and __fish_seen_subcommand_from import" -f -a "reel-db" -d 'Reel\'s database: every row of its auth_tokens table'
complete -c keyhaven -n "__fish_keyhaven_using_subcommand help; and __fish_seen_subcommand_from import" -f -a "json" -d 'JSON lines on stdin: {"provider", "server_id", "user_id", "token_type", "secret", "label"?, "expires_at"? (Unix seconds)}'
