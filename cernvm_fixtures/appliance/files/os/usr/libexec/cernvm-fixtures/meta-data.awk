# Print local-hostname from NoCloud meta-data (YAML "local-hostname: name"
# or JSON "local-hostname": "name").
{ sub(/\r$/, "") }
match($0, /"local-hostname"[ \t]*:[ \t]*"[^"]*"/) {
    v = substr($0, RSTART, RLENGTH)
    sub(/^"local-hostname"[ \t]*:[ \t]*"/, "", v)
    sub(/"$/, "", v)
    print v
    exit
}
/^[ \t]*local-hostname[ \t]*:/ {
    v = $0
    sub(/^[ \t]*local-hostname[ \t]*:[ \t]*/, "", v)
    sub(/[ \t]+#.*$/, "", v)
    gsub(/^[ \t"']+|[ \t"']+$/, "", v)
    print v
    exit
}
