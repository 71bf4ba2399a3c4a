# Print the key=value lines of the [ucernvm-begin] ... [ucernvm-end] block(s)
# found anywhere in the user data (the part µCernVM's bootloader reads).
{ sub(/\r$/, "") }
/\[ucernvm-begin\]/ { inblock = 1; next }
/\[ucernvm-end\]/ { inblock = 0; next }
inblock {
    s = $0
    gsub(/^[ \t#]+|[ \t]+$/, "", s)
    if (s ~ /^[A-Za-z_][A-Za-z0-9_.-]*[ \t]*=/) print s
}
