//! HTTP/1.1 requests and responses, and IPP (RFC 8010) carried in them.

pub fn get(host: &str, path: &str, user_agent: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nAccept: text/html, application/xhtml+xml, */*\r\nAccept-Language: en-US\r\nUser-Agent: {user_agent}\r\nAccept-Encoding: gzip, deflate\r\nHost: {host}\r\nConnection: Keep-Alive\r\n\r\n"
    )
    .into_bytes()
}

pub fn response(server: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 200 OK\r\nServer: {server}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-cache\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

pub fn post(host: &str, path: &str, user_agent: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "POST {path} HTTP/1.1\r\nContent-Length: {}\r\nContent-Type: {content_type}\r\nHost: {host}\r\nUser-Agent: {user_agent}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

fn ipp_attr(out: &mut Vec<u8>, tag: u8, name: &str, value: &[u8]) {
    out.push(tag);
    out.extend_from_slice(&(name.len() as u16).to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    out.extend_from_slice(value);
}

/// IPP/1.1 Print-Job request with `document` appended.
pub fn ipp_print_job(request_id: u32, printer_uri: &str, user: &str, job_name: &str, document: &[u8]) -> Vec<u8> {
    let mut b = vec![1, 1, 0x00, 0x02];
    b.extend_from_slice(&request_id.to_be_bytes());
    b.push(0x01); // operation-attributes-tag
    ipp_attr(&mut b, 0x47, "attributes-charset", b"utf-8");
    ipp_attr(&mut b, 0x48, "attributes-natural-language", b"en-us");
    ipp_attr(&mut b, 0x45, "printer-uri", printer_uri.as_bytes());
    ipp_attr(&mut b, 0x42, "requesting-user-name", user.as_bytes());
    ipp_attr(&mut b, 0x42, "job-name", job_name.as_bytes());
    ipp_attr(&mut b, 0x49, "document-format", b"application/octet-stream");
    b.push(0x03); // end-of-attributes
    b.extend_from_slice(document);
    b
}

pub fn ipp_print_job_response(request_id: u32, job_id: u32) -> Vec<u8> {
    let mut b = vec![1, 1, 0x00, 0x00];
    b.extend_from_slice(&request_id.to_be_bytes());
    b.push(0x01);
    ipp_attr(&mut b, 0x47, "attributes-charset", b"utf-8");
    ipp_attr(&mut b, 0x48, "attributes-natural-language", b"en-us");
    b.push(0x02); // job-attributes-tag
    ipp_attr(&mut b, 0x21, "job-id", &job_id.to_be_bytes());
    ipp_attr(&mut b, 0x23, "job-state", &3u32.to_be_bytes());
    b.push(0x03);
    b
}
