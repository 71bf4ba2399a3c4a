# Print the host name from meta data: NoCloud YAML "local-hostname: name", or JSON
# "local-hostname": "name" (EC2 flavour) or "hostname": "name" (OpenStack meta_data.json).
{ sub(/\r$/, "") }
match($0, /"(local-)?hostname"[ \t]*:[ \t]*"[^"]*"/) {
    v = substr($0, RSTART, RLENGTH)
    sub(/^"(local-)?hostname"[ \t]*:[ \t]*"/, "", v)
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
