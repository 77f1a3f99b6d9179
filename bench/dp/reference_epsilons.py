"""The reference epsilons of cloud-peer/src/fl/accountant.rs's test, from Google's
dp_accounting (PyPI `dp-accounting==0.6.0`, an implementation independent of tandem's):
RDP of the Poisson-sampled Gaussian at tandem's orders, composed T times, at delta.
Run in any venv with that package; prints the test's table rows."""
import dp_accounting
from dp_accounting.rdp import rdp_privacy_accountant as rdp
orders = list(range(2, 65)) + [128, 256, 512]
cases = [(0.1, 1.0, 50, 1e-5), (0.1, 0.8, 100, 1e-5), (0.01, 1.1, 1000, 1e-5), (0.5, 2.0, 10, 1e-6), (1.0, 5.0, 20, 1e-5), (0.05, 0.6, 300, 1e-5), (0.1, 4.0, 50, 1e-5)]
for q, z, t, d in cases:
    acc = rdp.RdpAccountant(orders)
    acc.compose(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)), t)
    print(f"        ({q!r}, {z!r}, {t}, {d:e}, {float(acc.get_epsilon(d))!r}),".replace("?", ""))
