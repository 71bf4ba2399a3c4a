# Print the items of the top-level "ssh_authorized_keys:" list of a cloud-config (root's keys; a user's own list
# under users: is users.awk's),
# block style ("- key" lines) or flow style ("[key, key]").
function trim(s) { gsub(/^[ \t]+|[ \t]+$/, "", s); return s }
function unquote(s) {
    s = trim(s)
    if (s ~ /^".*"$/ || s ~ /^'.*'$/) s = substr(s, 2, length(s) - 2)
    return s
}
function indent(s) { match(s, /^[ \t]*/); return RLENGTH }
{ sub(/\r$/, "") }
inlist {
    if ($0 ~ /^[ \t]*-([ \t]|$)/ && indent($0) >= keyindent) {
        s = $0
        sub(/^[ \t]*-[ \t]*/, "", s)
        s = unquote(s)
        if (s != "") print s
        next
    }
    if ($0 ~ /^[ \t]*(#.*)?$/) next
    inlist = 0
}
/^ssh_authorized_keys:[ \t]*(#.*)?$/ {
    inlist = 1
    keyindent = indent($0)
    next
}
/^ssh_authorized_keys:[ \t]*\[/ {
    s = $0
    sub(/^[^[]*\[/, "", s)
    sub(/\][ \t]*(#.*)?$/, "", s)
    n = split(s, items, ",")
    for (i = 1; i <= n; i++) { k = unquote(items[i]); if (k != "") print k }
    next
}
