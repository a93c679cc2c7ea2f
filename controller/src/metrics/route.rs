//! Route labels: a request path folded so that no request can create a label of its own.

/// A request path as a bounded route label: the name or UUID of a node, port, portgroup,
/// allocation, driver, chassis, inspection rule, history event, trait or server becomes a placeholder; every
/// file of the web console is `/ui`; any path outside the API's shape is `other`.
pub fn route_of(path: &str) -> String {
    const COLLECTIONS: [&str; 9] = [
        "nodes",
        "ports",
        "portgroups",
        "allocations",
        "drivers",
        "chassis",
        "conductors",
        "deploy_templates",
        "inspection_rules",
    ];
    const NODE_SUBS: [&str; 12] = [
        "states",
        "provision",
        "power",
        "boot_device",
        "management",
        "traits",
        "history",
        "inventory",
        "validate",
        "ports",
        "supported",
        "vifs",
    ];
    /// Ingot's own collections under `/v1/ingot/`.
    const INGOT: [&str; 5] = ["flavors", "images", "servers", "whoami", "events"];
    if path == "/metrics" {
        return path.to_owned();
    }
    if path == "/ui" || path.starts_with("/ui/") {
        return "/ui".to_owned();
    }
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    if segs == [""] {
        return "/".to_owned();
    }
    if let ["v1", "ingot", rest @ ..] = segs.as_slice() {
        return match rest {
            [sub] if INGOT.contains(sub) => format!("/v1/ingot/{sub}"),
            ["servers", _] => "/v1/ingot/servers/{ident}".to_owned(),
            _ => "other".to_owned(),
        };
    }
    let mut out = Vec::with_capacity(segs.len());
    let mut prev = "";
    for (i, seg) in segs.iter().enumerate() {
        let folded = match (i, prev) {
            (0, _) if *seg == "v1" => "v1",
            (0, _) => return "other".to_owned(),
            (1, _) if COLLECTIONS.contains(seg) => seg,
            (1, _) => return "other".to_owned(),
            (2, _) if *seg == "detail" => "detail",
            (2, _) => "{ident}",
            (_, "history") => "{event}",
            (_, "traits") => "{trait}",
            (_, _) if NODE_SUBS.contains(seg) || *seg == "hardware" || *seg == "sensors" => seg,
            _ => return "other".to_owned(),
        };
        out.push(folded);
        prev = seg;
    }
    format!("/{}", out.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_fold_names_into_placeholders() {
        let rows = [
            ("/", "/"),
            ("/v1", "/v1"),
            ("/v1/nodes", "/v1/nodes"),
            ("/metrics", "/metrics"),
            ("/metrics/x", "other"),
            ("/v1/nodes/detail", "/v1/nodes/detail"),
            ("/v1/nodes/web-01", "/v1/nodes/{ident}"),
            (
                "/v1/nodes/6f0e1c38-8b7e-4d41-9a43-1c9c1f0e6b2a/states/provision",
                "/v1/nodes/{ident}/states/provision",
            ),
            (
                "/v1/nodes/n1/traits/CUSTOM_GPU",
                "/v1/nodes/{ident}/traits/{trait}",
            ),
            (
                "/v1/nodes/n1/history/abc",
                "/v1/nodes/{ident}/history/{event}",
            ),
            ("/v1/ports/p1", "/v1/ports/{ident}"),
            ("/v1/allocations/a1", "/v1/allocations/{ident}"),
            ("/v1/nodes/n1/secret-path-x", "other"),
            ("/v2/anything", "other"),
            ("/favicon.ico", "other"),
            ("/v1/whatever/x", "other"),
            ("/v1/ingot/flavors", "/v1/ingot/flavors"),
            ("/v1/ingot/events", "/v1/ingot/events"),
            ("/v1/ingot/whoami", "/v1/ingot/whoami"),
            ("/v1/ingot/servers", "/v1/ingot/servers"),
            ("/v1/ingot/servers/s-1", "/v1/ingot/servers/{ident}"),
            ("/v1/ingot/servers/s-1/x", "other"),
            ("/v1/ingot/flavors/big", "other"),
            ("/v1/ingot/anything", "other"),
            ("/v1/ingot", "other"),
            ("/v1/conductors/host-a", "/v1/conductors/{ident}"),
            ("/v1/inspection_rules", "/v1/inspection_rules"),
            ("/v1/inspection_rules/9f0e", "/v1/inspection_rules/{ident}"),
            ("/ui", "/ui"),
            ("/ui/app.js", "/ui"),
            ("/ui/made-up-file-123", "/ui"),
        ];
        for (path, want) in rows {
            assert_eq!(route_of(path), want, "{path}");
        }
    }
}
