"""How much of the frozen cut's hidden states a fixed code of a given size keeps.

Reads the calibration tokens `pca.patch` dumps (TANDEM_EXP_DUMP=FILE: tokens x 384 f32),
fits on the first three quarters, measures on the last quarter: PCA at several ranks, then
transform coding (PCA rotation, one quantiser step for every component, components
clipped at 4 standard deviations) with fixed-length and entropy-coded bits per token.
Usage: python spectrum.py FILE   (numpy)
"""
import sys
import numpy as np
X=np.fromfile(sys.argv[1],dtype='<f4').reshape(-1,384).astype(np.float64)
n=len(X); tr=X[: n*3//4]; te=X[n*3//4:]
tot=(te**2).sum()
print("tokens",n, "norm mean", np.linalg.norm(X,axis=1).mean(), "max abs per dim top5", np.sort(np.abs(X).max(0))[-5:])
mu=tr.mean(0); C=np.cov((tr-mu).T)
w,V=np.linalg.eigh(C); w=w[::-1]; V=V[:,::-1]
print("centered energy frac of mean:", (mu**2).sum()*len(te)/tot)
for r in [8,16,32,64,128]:
    P=V[:,:r]; R=mu+((te-mu)@P)@P.T
    print("PCA r=%d rel err %.3f"%(r, np.sqrt(((te-R)**2).sum()/tot)))
Z=(te-mu)@V; sd=np.sqrt(w)
def tc(delta, clipk=4.0):
    bits=np.ceil(np.log2(np.maximum(2*clipk*sd/delta,1.0))) ; bits[2*clipk*sd<delta]=0
    q=np.zeros_like(Z)
    keep=bits>0
    lim=clipk*sd
    zc=np.clip(Z,-lim,lim)
    q[:,keep]=np.round(zc[:,keep]/delta)*delta
    R=mu+q@V.T
    # entropy of integer symbols
    H=0
    for j in np.where(keep)[0]:
        s=np.round(zc[:,j]/delta).astype(int); _,c=np.unique(s,return_counts=True); p=c/c.sum(); H+=-(p*np.log2(p)).sum()
    return bits.sum(), H, np.sqrt(((te-R)**2).sum()/tot), keep.sum()
for delta in [0.05,0.1,0.2,0.3,0.5,0.8,1.2,2.0]:
    b,H,e,k=tc(delta)
    print("delta %.2f fixed bits/token %d (%.1f B) entropy %.1f bits (%.1f B) comps %d rel err %.3f"%(delta,b,b/8,H,H/8,k,e))
