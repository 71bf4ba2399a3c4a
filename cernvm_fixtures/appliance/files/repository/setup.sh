# Sets up the test appliance's analysis the way an experiment's setup script sets up its software from CernVM-FS
# (". /cvmfs/<repository>/.../setup.sh", then run its programs): sourced, never run.
CVMFX_ANALYSIS=/cvmfs/cernvm-prod.cern.ch/analysis
PATH=$CVMFX_ANALYSIS/bin:$PATH
export CVMFX_ANALYSIS PATH
