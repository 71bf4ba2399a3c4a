# Print one key of a cloud-config's "ssh_keys:" mapping (cloud-init's cc_ssh), e.g. -v want=ed25519_private:
# a block scalar ("key: |" followed by indented lines) or a plain one-line value.
function indent(s) { match(s, /^[ \t]*/); return RLENGTH }
{ sub(/\r$/, "") }
inblock {
    if ($0 ~ /^[ \t]*$/) { print ""; next }
    if (indent($0) > keyind) {
        if (!bind) bind = indent($0)
        print substr($0, bind + 1)
        next
    }
    inblock = 0
}
insection && $0 !~ /^[ \t]*(#.*)?$/ && indent($0) == 0 { insection = 0 }
/^ssh_keys:[ \t]*(#.*)?$/ { insection = 1; next }
insection {
    s = $0
    sub(/^[ \t]*/, "", s)
    if (index(s, want ":") != 1) next
    value = substr(s, length(want) + 2)
    sub(/^[ \t]*/, "", value)
    if (value ~ /^[|>][-+]?[ \t]*$/) { inblock = 1; keyind = indent($0); bind = 0; next }
    if (value ~ /^".*"$/ || value ~ /^'.*'$/) value = substr(value, 2, length(value) - 2)
    print value
}
