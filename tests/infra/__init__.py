"""Real servers for the tests, started on 127.0.0.1 by the tests themselves (installed by .ci/run):

* `oidc_provider`: LemonLDAP::NG (nginx + llng-fastcgi-server) as an OpenID Provider (marker `oidc`);
* `syslog_collector`: rsyslogd receiving syslog over UDP and TLS (marker `syslog`);
* `s3_server`: Ceph's radosgw on a one-node Ceph cluster (marker `s3`).

Each module has a context manager (OpenIDProvider, SyslogCollector, CephS3Server) and a pytest fixture that
fails in CI and skips elsewhere when its programs are missing; each has a self-test here.
"""
