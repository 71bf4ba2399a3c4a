# Print the [ucernvm-begin] ... [ucernvm-end] block(s) of user data the way µCernVM records them in
# /mnt/.rw/context/ucontext: one _UCONTEXT_<KEY IN CAPITALS>=<value> line per key=value setting, with
# yes/on/true written as 1 and no/off/false as 0. Used by the bootloader stage (a copy is in the initramfs).
{ sub(/\r$/, "") }
/\[ucernvm-begin\]/ { inblock = 1; next }
/\[ucernvm-end\]/ { inblock = 0; next }
inblock {
    s = $0
    gsub(/^[ \t#]+|[ \t]+$/, "", s)
    if (s !~ /^[A-Za-z_][A-Za-z0-9_]*[ \t]*=/) next
    key = s; sub(/[ \t]*=.*$/, "", key)
    value = s; sub(/^[^=]*=[ \t]*/, "", value)
    v = tolower(value)
    if (v == "yes" || v == "on" || v == "true") value = 1
    else if (v == "no" || v == "off" || v == "false") value = 0
    print "_UCONTEXT_" toupper(key) "=" value
}
