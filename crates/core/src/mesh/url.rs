//! `apiServer` as a URL: it is written into every peer's kubeconfig, so anything beyond
//! `https://host[:port][/path]` (a newline, a space, a query, credentials) is refused rather than spliced.

/// Why `text` is not an `https://host[:port][/path]` URL, or `None` if it is one.
pub(super) fn https_url_problem(text: &str) -> Option<String> {
    let Some(rest) = text.strip_prefix("https://") else {
        return Some("must start with https://".into());
    };
    if let Some(bad) = text.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Some(format!(
            "contains {bad:?}; a URL has no whitespace or control characters"
        ));
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    authority_problem(authority).or_else(|| path_problem(path))
}

fn authority_problem(authority: &str) -> Option<String> {
    if authority.contains('@') {
        return Some("must not carry credentials (user@host)".into());
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let Some((addr, after)) = v6.split_once(']') else {
            return Some("has an IPv6 address without its closing ']'".into());
        };
        if addr.is_empty()
            || !addr
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Some(format!("[{addr}] is not an IPv6 address"));
        }
        match after {
            "" => (addr, None),
            p if p.starts_with(':') => (addr, Some(&p[1..])),
            _ => return Some("has text after the IPv6 address that is not a :port".into()),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if !authority.starts_with('[') && !is_host_name(host) {
        return Some(format!("host {host:?} is not a DNS name or IPv4 address"));
    }
    match port {
        Some(p) if p.parse::<u16>().ok().filter(|n| *n > 0).is_none() || p.starts_with('+') => {
            Some(format!("port {p:?} is not a number from 1 to 65535"))
        }
        _ => None,
    }
}

/// Letters, digits, '-' and '.', in dot-separated labels of 1..=63 characters: covers DNS names and IPv4.
fn is_host_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn path_problem(path: &str) -> Option<String> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"/-._~%".contains(&b);
    path.bytes().find(|b| !allowed(*b)).map(|b| {
        format!(
            "has {:?} after the host; only a path (letters, digits, / - . _ ~ %) may follow host:port",
            b as char
        )
    })
}

#[cfg(test)]
mod tests {
    use super::https_url_problem;

    #[test]
    fn accepts_hosts_ports_and_paths() {
        for ok in [
            "https://10.0.0.1:6443",
            "https://api.example.com",
            "https://api.example.com:443/k8s/clusters/c-1",
            "https://[::1]:6443",
            "https://[fd00::1]",
        ] {
            assert_eq!(https_url_problem(ok), None, "{ok}");
        }
    }

    #[test]
    fn refuses_what_would_break_a_kubeconfig() {
        for bad in [
            "http://10.0.0.1",
            "https://",
            "https://a.example.com\nevil: yes",
            "https://a.example.com:6443 x",
            "https://user:pw@a.example.com",
            "https://a.example.com:0",
            "https://a.example.com:70000",
            "https://a.example.com:+1",
            "https://a.example.com?x=1",
            "https://a.example.com/#frag",
            "https://a..example.com",
            "https://-a.example.com",
            "https://[::1",
            "https://[zz]:1",
            "https://a.example.com:6443\"",
        ] {
            assert!(https_url_problem(bad).is_some(), "{bad:?}");
        }
    }
}
