//! Several IVS regions: where each of IVS Real-Time's regions is, how a broadcast's pool and
//! its leases are named in each, and the order in which a viewer's regions are tried.
//!
//! A broadcast has one `StagePool` per configured region. The first region's pool keeps the
//! single-region names: the object `idFromName(broadcast)`, leases `{broadcast}.{secret}`.
//! Another region's pool is `{broadcast}@{region}` and its leases `{broadcast}@{region}.{secret}`:
//! a broadcast id holds no `@` and a region no `.`, so the edge reads the pool of a lease from
//! the lease alone, and a lease can only name a pool of the broadcast it starts with (whether
//! the lease exists is that pool's question).

use crate::ids::{validate_broadcast_id, InvalidField, LEASE_SECRET_CHARS};

/// IVS Real-Time's regions (AWS's general reference, `ivsrealtime.{region}.amazonaws.com`)
/// and the approximate coordinates of each (latitude, longitude in degrees): the city of the
/// AWS region.
pub const IVS_REALTIME_REGIONS: [(&str, f64, f64); 7] = [
    ("us-east-1", 38.9, -77.4),      // N. Virginia
    ("us-west-2", 45.8, -119.7),     // Oregon
    ("ap-south-1", 19.1, 72.9),      // Mumbai
    ("ap-northeast-2", 37.6, 127.0), // Seoul
    ("ap-northeast-1", 35.7, 139.7), // Tokyo
    ("eu-central-1", 50.1, 8.7),     // Frankfurt
    ("eu-west-1", 53.3, -6.3),       // Dublin
];

/// A representative point of each continent (Cloudflare's `request.cf.continent` codes), for
/// a request whose coordinates are unknown.
const CONTINENTS: [(&str, f64, f64); 7] = [
    ("NA", 40.0, -95.0),
    ("SA", -15.0, -55.0),
    ("EU", 50.0, 10.0),
    ("AF", 5.0, 20.0),
    ("AS", 30.0, 100.0),
    ("OC", -25.0, 135.0),
    ("AN", -75.0, 0.0),
];

/// The default IVS Real-Time endpoint of `region` (IVS's naming).
pub fn default_endpoint(region: &str) -> String {
    format!("https://ivsrealtime.{region}.amazonaws.com")
}

/// The coordinates of an IVS Real-Time region, if it is one stagefan knows.
pub fn coordinates(region: &str) -> Option<(f64, f64)> {
    IVS_REALTIME_REGIONS
        .iter()
        .find(|(name, _, _)| *name == region)
        .map(|&(_, lat, lon)| (lat, lon))
}

/// Great-circle distance in kilometres between two points (haversine, mean Earth radius).
pub fn distance_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (lat1, lon1) = (a.0.to_radians(), a.1.to_radians());
    let (lat2, lon2) = (b.0.to_radians(), b.1.to_radians());
    let h = ((lat2 - lat1) / 2.0).sin().powi(2)
        + lat1.cos() * lat2.cos() * ((lon2 - lon1) / 2.0).sin().powi(2);
    2.0 * 6_371.0 * h.sqrt().min(1.0).asin()
}

/// Where a request comes from, as Cloudflare tells the worker (`request.cf`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Location {
    /// Nothing known: the configured order.
    #[default]
    Unknown,
    /// `latitude`, `longitude` (degrees).
    Point(f64, f64),
}

impl Location {
    /// From `request.cf`'s fields as they arrive (strings): the coordinates when both read
    /// as numbers in range, else the continent's representative point, else unknown.
    pub fn of_cf(latitude: Option<&str>, longitude: Option<&str>, continent: Option<&str>) -> Self {
        let num = |v: Option<&str>| v.and_then(|s| s.trim().parse::<f64>().ok());
        match (num(latitude), num(longitude)) {
            (Some(lat), Some(lon))
                if lat.is_finite()
                    && lon.is_finite()
                    && (-90.0..=90.0).contains(&lat)
                    && (-180.0..=180.0).contains(&lon) =>
            {
                Location::Point(lat, lon)
            }
            _ => continent
                .and_then(|c| CONTINENTS.iter().find(|(code, _, _)| *code == c))
                .map_or(Location::Unknown, |&(_, lat, lon)| {
                    Location::Point(lat, lon)
                }),
        }
    }
}

/// What the edge knows when it places a viewer.
#[derive(Debug, Clone, Default)]
pub struct PlacementRequest<'a> {
    /// Where the request comes from.
    pub location: Location,
    /// The region the viewer asks for (`region` of the request): tried first.
    pub preferred: Option<&'a str>,
    /// The region of the lease a reconnect presents: tried before anything else (a seat is
    /// never moved to another region while its lease lives).
    pub lease_region: Option<&'a str>,
    /// Regions that refused a seat recently (full, or over a quota): tried last.
    pub refusing: &'a [&'a str],
}

/// The order in which to try the configured `regions` (the first is the primary) for a
/// viewer: the lease's region, then the preferred one, then the regions that did not refuse
/// lately by distance from the request (nearest first; a region without known coordinates,
/// or every region when the location is unknown, in configured order after those), then the
/// refusing ones in that same order. A `preferred` region that is not configured is an error
/// naming `region`. Every configured region appears once.
pub fn placement_order(
    regions: &[&str],
    req: &PlacementRequest<'_>,
) -> Result<Vec<String>, InvalidField> {
    if let Some(p) = req.preferred {
        if !regions.contains(&p) {
            return Err(InvalidField::new(
                "region",
                format!(
                    "{p:?} is not a region of this deployment (it runs {})",
                    regions.join(", ")
                ),
            ));
        }
    }
    // Rank: (pinned first, refusing last, then distance; unknown distance after known).
    let rank = |index: usize, region: &str| {
        let pinned = if req.lease_region == Some(region) {
            0
        } else if req.preferred == Some(region) {
            1
        } else {
            2
        };
        let refusing = req.refusing.contains(&region);
        let distance = match (req.location, coordinates(region)) {
            (Location::Point(lat, lon), Some(at)) => distance_km((lat, lon), at),
            _ => f64::INFINITY,
        };
        (pinned, refusing, distance, index)
    };
    let mut ranked: Vec<_> = regions
        .iter()
        .enumerate()
        .map(|(i, r)| (rank(i, r), *r))
        .collect();
    ranked.sort_by(|(a, _), (b, _)| {
        (a.0, a.1)
            .cmp(&(b.0, b.1))
            .then(a.2.total_cmp(&b.2))
            .then(a.3.cmp(&b.3))
    });
    let mut order: Vec<String> = Vec::with_capacity(ranked.len());
    for (_, region) in ranked {
        if !order.iter().any(|r| r == region) {
            order.push(region.to_string());
        }
    }
    Ok(order)
}

/// The name of a broadcast's pool in `region`, where `primary` is the deployment's first
/// region: `broadcast` there (today's name), `{broadcast}@{region}` elsewhere.
pub fn pool_name(broadcast: &str, region: &str, primary: &str) -> String {
    if region == primary {
        broadcast.to_string()
    } else {
        format!("{broadcast}@{region}")
    }
}

/// A pool's name read back: its broadcast, and its region when it is not the primary's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolRef<'a> {
    /// The broadcast.
    pub broadcast: &'a str,
    /// `None`: the primary region's pool.
    pub region: Option<&'a str>,
}

/// Reads a pool name (`broadcast` or `broadcast@region`); errors name `field`.
pub fn parse_pool_name<'a>(field: &str, name: &'a str) -> Result<PoolRef<'a>, InvalidField> {
    match name.split_once('@') {
        None => {
            validate_broadcast_id(name).map_err(|e| InvalidField::new(field, e.problem))?;
            Ok(PoolRef {
                broadcast: name,
                region: None,
            })
        }
        Some((broadcast, region)) => {
            validate_broadcast_id(broadcast)
                .map_err(|e| InvalidField::new(field, format!("its broadcast {}", e.problem)))?;
            validate_region(region)
                .map_err(|e| InvalidField::new(field, format!("its region {}", e.problem)))?;
            Ok(PoolRef {
                broadcast,
                region: Some(region),
            })
        }
    }
}

/// Where a lease id routes: its pool, and, for a lease of stage presence, its stage's object
/// (`crate::presence`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseRoute<'a> {
    /// The pool's name as the lease spells it (`broadcast` or `broadcast@region`).
    pub pool_name: &'a str,
    /// The pool's name read.
    pub pool: PoolRef<'a>,
    /// The stage whose object keeps the lease alive (`None`: the pool keeps it).
    pub stage: Option<crate::pool::StageId>,
}

/// Reads a lease id as the pools make them: `{pool name}.{22 url-safe characters}`, or in
/// stage presence `{pool name}.{stage number}.{22 url-safe characters}`; errors name
/// `leaseId`. Only the form is checked: whether the lease exists is its object's question.
pub fn lease_route(lease_id: &str) -> Result<LeaseRoute<'_>, InvalidField> {
    let bad = |why: &str| InvalidField::new("leaseId", format!("is not a lease id: {why}"));
    let (head, secret) = lease_id
        .rsplit_once('.')
        .ok_or_else(|| bad("no `.` between broadcast and secret"))?;
    let (pool_name, stage) = match head.split_once('.') {
        None => (head, None),
        Some((pool, stage)) => {
            let number = (!stage.is_empty()
                && stage.len() <= 19
                && stage.bytes().all(|b| b.is_ascii_digit()))
            .then(|| stage.parse::<u64>().ok())
            .flatten()
            .ok_or_else(|| bad("its stage must be a number"))?;
            (pool, Some(crate::pool::StageId(number)))
        }
    };
    let pool = parse_pool_name("leaseId", pool_name).map_err(|e| bad(&e.problem))?;
    let len = secret.chars().count();
    if len != LEASE_SECRET_CHARS {
        return Err(bad(&format!(
            "its secret must be {LEASE_SECRET_CHARS} characters, got {len}"
        )));
    }
    if !secret
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(bad(
            "its secret may hold only url-safe base64 (letters, digits, `_`, `-`)",
        ));
    }
    Ok(LeaseRoute {
        pool_name,
        pool,
        stage,
    })
}

/// The pool a lease id belongs to (see [`lease_route`]); errors name `leaseId`.
pub fn pool_of_lease(lease_id: &str) -> Result<PoolRef<'_>, InvalidField> {
    lease_route(lease_id).map(|r| r.pool)
}

/// The region of a stage ARN (`arn:aws:ivs:{region}:{account}:stage/{id}`), if it has one.
pub fn region_of_arn(arn: &str) -> Option<&str> {
    let mut parts = arn.split(':');
    let (_, _, service, region) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    (service == "ivs" && validate_region(region).is_ok()).then_some(region)
}

/// Checks an AWS region name: 1 to 32 of lower-case letters, digits and `-`, not starting or
/// ending with `-`; errors name `region`.
pub fn validate_region(region: &str) -> Result<(), InvalidField> {
    let ok = (1..=32).contains(&region.len())
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !region.starts_with('-')
        && !region.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(InvalidField::new(
            "region",
            format!(
                "must look like `us-east-1` (lower-case letters, digits and `-`), got {region:?}"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_ids_name_their_pool_and_in_stage_presence_their_stage() {
        let route = lease_route("default.12.abcdefghijABCDEFGHIJ-_").unwrap();
        assert_eq!(route.pool.broadcast, "default");
        assert_eq!(route.pool_name, "default");
        assert_eq!(route.stage, Some(crate::pool::StageId(12)));
        let regional = lease_route("default@eu-west-1.3.abcdefghijABCDEFGHIJ-_").unwrap();
        assert_eq!(regional.pool.region, Some("eu-west-1"));
        assert_eq!(regional.pool_name, "default@eu-west-1");
        assert_eq!(regional.stage, Some(crate::pool::StageId(3)));
        let plain = lease_route("default.abcdefghijABCDEFGHIJ-_").unwrap();
        assert_eq!((plain.stage, plain.pool.region), (None, None));
        for bad in [
            "default..abcdefghijABCDEFGHIJ-_",
            "default.x1.abcdefghijABCDEFGHIJ-_",
            "default.-1.abcdefghijABCDEFGHIJ-_",
            "default.99999999999999999999.abcdefghijABCDEFGHIJ-_",
            "default.1.2.abcdefghijABCDEFGHIJ-_",
            "de fault.1.abcdefghijABCDEFGHIJ-_",
            "default@EU.1.abcdefghijABCDEFGHIJ-_",
            "default.1.short",
        ] {
            let err = lease_route(bad).unwrap_err();
            assert_eq!(err.field, "leaseId", "{bad}");
        }
    }

    const TWO: [&str; 2] = ["us-east-1", "eu-west-1"];
    const ALL: [&str; 7] = [
        "us-east-1",
        "us-west-2",
        "ap-south-1",
        "ap-northeast-2",
        "ap-northeast-1",
        "eu-central-1",
        "eu-west-1",
    ];

    fn order(regions: &[&str], req: PlacementRequest<'_>) -> Vec<String> {
        placement_order(regions, &req).unwrap()
    }

    fn at(lat: f64, lon: f64) -> PlacementRequest<'static> {
        PlacementRequest {
            location: Location::Point(lat, lon),
            ..Default::default()
        }
    }

    #[test]
    fn distances_are_great_circles() {
        // Dublin to N. Virginia is about 5,500 km; a point to itself is 0.
        let d = distance_km(
            coordinates("eu-west-1").unwrap(),
            coordinates("us-east-1").unwrap(),
        );
        assert!((5_300.0..5_700.0).contains(&d), "{d}");
        assert_eq!(distance_km((10.0, 20.0), (10.0, 20.0)), 0.0);
        // Antipodes: half the circumference.
        let half = distance_km((0.0, 0.0), (0.0, 180.0));
        assert!((half - 20_015.0).abs() < 5.0, "{half}");
    }

    #[test]
    fn nearest_region_first() {
        // Paris, São Paulo, Sydney, Delhi, Osaka, Seattle.
        assert_eq!(order(&TWO, at(48.9, 2.35))[0], "eu-west-1");
        assert_eq!(order(&TWO, at(40.7, -74.0)), ["us-east-1", "eu-west-1"]);
        assert_eq!(order(&ALL, at(48.9, 2.35))[0], "eu-central-1");
        assert_eq!(order(&ALL, at(-23.5, -46.6))[0], "us-east-1");
        assert_eq!(order(&ALL, at(28.6, 77.2))[0], "ap-south-1");
        assert_eq!(order(&ALL, at(34.7, 135.5))[0], "ap-northeast-1");
        assert_eq!(order(&ALL, at(47.6, -122.3))[0], "us-west-2");
        let sydney = order(&ALL, at(-33.9, 151.2));
        assert_eq!(sydney[0], "ap-northeast-1");
        assert_eq!(sydney.len(), 7);
    }

    #[test]
    fn unknown_location_keeps_the_configured_order() {
        let req = PlacementRequest::default();
        assert_eq!(order(&TWO, req.clone()), TWO);
        assert_eq!(
            order(&["eu-west-1", "us-east-1"], req),
            ["eu-west-1", "us-east-1"]
        );
        // A region without coordinates goes after the known ones, in configured order.
        assert_eq!(
            order(&["xx-new-1", "us-east-1", "yy-new-2"], at(50.0, 0.0)),
            ["us-east-1", "xx-new-1", "yy-new-2"]
        );
    }

    #[test]
    fn preferred_and_lease_regions_come_first() {
        let paris = at(48.9, 2.35);
        let preferred = PlacementRequest {
            preferred: Some("us-east-1"),
            ..paris.clone()
        };
        assert_eq!(order(&TWO, preferred), ["us-east-1", "eu-west-1"]);
        // A lease's region beats the preference and the distance.
        let lease = PlacementRequest {
            preferred: Some("eu-west-1"),
            lease_region: Some("us-east-1"),
            refusing: &["us-east-1"],
            ..paris
        };
        assert_eq!(order(&TWO, lease), ["us-east-1", "eu-west-1"]);
    }

    #[test]
    fn refusing_regions_go_last() {
        let req = PlacementRequest {
            refusing: &["eu-west-1"],
            ..at(48.9, 2.35)
        };
        assert_eq!(order(&TWO, req), ["us-east-1", "eu-west-1"]);
        let all_refuse = PlacementRequest {
            refusing: &TWO,
            ..at(48.9, 2.35)
        };
        assert_eq!(order(&TWO, all_refuse), ["eu-west-1", "us-east-1"]);
        // The preferred region is tried first even when it refused lately.
        let pref = PlacementRequest {
            preferred: Some("eu-west-1"),
            refusing: &["eu-west-1"],
            ..Default::default()
        };
        assert_eq!(order(&TWO, pref), ["eu-west-1", "us-east-1"]);
    }

    #[test]
    fn an_unconfigured_preference_is_a_400_naming_region() {
        let req = PlacementRequest {
            preferred: Some("ap-south-1"),
            ..Default::default()
        };
        let err = placement_order(&TWO, &req).unwrap_err();
        assert_eq!(err.field, "region");
        assert!(err.problem.contains("us-east-1, eu-west-1"), "{err}");
    }

    #[test]
    fn locations_from_cloudflare() {
        assert_eq!(
            Location::of_cf(Some("48.85"), Some("2.35"), Some("EU")),
            Location::Point(48.85, 2.35)
        );
        assert_eq!(
            Location::of_cf(None, None, Some("EU")),
            Location::Point(50.0, 10.0)
        );
        assert_eq!(
            Location::of_cf(Some("91"), Some("0"), Some("AS")),
            Location::Point(30.0, 100.0)
        );
        assert_eq!(Location::of_cf(Some("x"), None, None), Location::Unknown);
        assert_eq!(Location::of_cf(None, None, Some("ZZ")), Location::Unknown);
        // A continent's point places as the continent: Europe → Frankfurt, Asia → Seoul/Tokyo.
        let eu = PlacementRequest {
            location: Location::of_cf(None, None, Some("EU")),
            ..Default::default()
        };
        assert_eq!(order(&ALL, eu)[0], "eu-central-1");
    }

    #[test]
    fn pool_names_and_leases() {
        assert_eq!(pool_name("b", "us-east-1", "us-east-1"), "b");
        assert_eq!(pool_name("b", "eu-west-1", "us-east-1"), "b@eu-west-1");
        let secret = "abcdefghijABCDEFGHIJ-_";
        let (l1, l2) = (format!("b.{secret}"), format!("b@eu-west-1.{secret}"));
        let primary = pool_of_lease(&l1).unwrap();
        assert_eq!((primary.broadcast, primary.region), ("b", None));
        let other = pool_of_lease(&l2).unwrap();
        assert_eq!((other.broadcast, other.region), ("b", Some("eu-west-1")));
        for bad in [
            format!("b@.{secret}"),
            format!("b@EU.{secret}"),
            format!("@eu-west-1.{secret}"),
            format!("b@eu-west-1@x.{secret}"),
            format!("b@eu.west.{secret}"),
            "b@eu-west-1.short".to_string(),
            "b@eu-west-1".to_string(),
        ] {
            let err = pool_of_lease(&bad).unwrap_err();
            assert_eq!(err.field, "leaseId", "{bad}");
        }
        assert_eq!(
            parse_pool_name("broadcast", "b@eu-west-1").unwrap().region,
            Some("eu-west-1")
        );
        assert_eq!(
            parse_pool_name("broadcast", "b@").unwrap_err().field,
            "broadcast"
        );
    }

    #[test]
    fn regions_of_arns() {
        assert_eq!(
            region_of_arn("arn:aws:ivs:eu-west-1:123456789012:stage/abcd"),
            Some("eu-west-1")
        );
        assert_eq!(region_of_arn("arn:aws:ivs::1:stage/a"), None);
        assert_eq!(region_of_arn("arn:aws:s3:us-east-1:1:stage/a"), None);
        assert_eq!(region_of_arn("nonsense"), None);
    }
}
