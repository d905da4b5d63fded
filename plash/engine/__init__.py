"""The trio build engine: plans a build as a DAG of layer jobs and runs it."""
