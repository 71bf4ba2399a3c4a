# Print the cloud-config text of NoCloud user data.
#  - plain user data whose first line starts with "#cloud-config": all of it;
#  - MIME multipart user data: the body of every text/cloud-config part (and
#    of text/plain parts that start with "#cloud-config"); only 7bit, 8bit or
#    binary transfer encodings are understood, other parts are skipped.
function header_value(line, name,    l, p) {
    l = tolower(line)
    p = index(l, name)
    if (!p) return ""
    line = substr(line, p + length(name))
    sub(/^[ \t]*/, "", line)
    return line
}
BEGIN { state = "top"; boundary = "" }
{ sub(/\r$/, "") }
NR == 1 && /^#cloud-config/ { plain = 1 }
plain { print; next }
state == "top" {
    if ($0 == "") { state = (boundary == "" ? "none" : "preamble"); next }
    b = header_value($0, "boundary=")
    if (b != "") {
        if (b ~ /^"/) { b = substr(b, 2); sub(/".*$/, "", b) } else { sub(/[; \t].*$/, "", b) }
        boundary = b
    }
    next
}
state == "none" || state == "done" { next }
$0 == "--" boundary "--" { state = "done"; next }
$0 == "--" boundary { state = "headers"; ctype = ""; cte = ""; next }
state == "headers" {
    if ($0 == "") {
        ok = (cte == "" || cte ~ /^(7bit|8bit|binary)/)
        want = ok && ctype ~ /^text\/cloud-config/
        maybe = ok && (ctype == "" || ctype ~ /^text\/plain/)
        first = 1
        state = "body"
        next
    }
    v = header_value($0, "content-type:")
    if (v != "") ctype = tolower(v)
    v = header_value($0, "content-transfer-encoding:")
    if (v != "") cte = tolower(v)
    next
}
state == "body" {
    if (first && maybe && /^#cloud-config/) want = 1
    first = 0
    if (want) print
}
