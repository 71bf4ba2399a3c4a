# Print the users of a cloud-config's top-level "users:" list (block style, as cloud-init's examples write it),
# one line per user and one per key of theirs, tab separated:
#   user <TAB> NAME <TAB> PRIMARY_GROUP <TAB> LOCK_PASSWD (true/false) <TAB> PASSWD (hash)
# ("-" for an empty field: a shell's read joins consecutive tabs)
#   key <TAB> NAME <TAB> PUBLIC KEY
# Items that are plain strings ("default", a user name) and keys this appliance does not implement are ignored.
function trim(s) { gsub(/^[ \t]+|[ \t]+$/, "", s); return s }
function unquote(s) {
    s = trim(s)
    if (s ~ /^".*"$/ || s ~ /^'.*'$/) s = substr(s, 2, length(s) - 2)
    return s
}
function indent(s) { match(s, /^[ \t]*/); return RLENGTH }
function flush() {
    if (name != "") printf "user\t%s\t%s\t%s\t%s\n", name, (group == "" ? "-" : group), lock, (passwd == "" ? "-" : passwd)
    for (i = 1; i <= nkeys; i++) if (name != "") printf "key\t%s\t%s\n", name, keys[i]
    name = ""; group = ""; lock = "true"; passwd = ""; nkeys = 0; inkeys = 0
}
BEGIN { lock = "true" }
{ sub(/\r$/, "") }
/^users:[ \t]*(#.*)?$/ { inusers = 1; next }
!inusers { next }
/^[ \t]*(#.*)?$/ { next }
indent($0) == 0 { flush(); inusers = 0; next }
# a new item of the list
/^[ \t]*-[ \t]/ && (itemindent == "" || indent($0) == itemindent) && !(inkeys && indent($0) > keyindent) {
    flush()
    itemindent = indent($0)
    s = $0
    sub(/^[ \t]*-[ \t]*/, "", s)
    if (s !~ /^[A-Za-z_]+:/) next  # a plain string item: not a user this appliance creates
    fieldindent = itemindent + 2
}
{
    s = $0
    if (inkeys && indent(s) > keyindent && s ~ /^[ \t]*-[ \t]/) {
        sub(/^[ \t]*-[ \t]*/, "", s)
        keys[++nkeys] = unquote(s)
        next
    }
    inkeys = 0
    sub(/^[ \t]*(-[ \t]+)?/, "", s)
    key = s; sub(/:.*/, "", key)
    value = s; sub(/^[^:]*:[ \t]*/, "", value); value = unquote(value)
    if (key == "name") name = value
    else if (key == "primary_group") group = value
    else if (key == "lock_passwd") lock = tolower(value)
    else if (key == "passwd") passwd = value
    else if (key == "ssh_authorized_keys") { inkeys = 1; keyindent = indent($0) }
}
END { flush() }
