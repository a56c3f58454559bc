"""Faces and people on a keyframe: OpenCV's Haar cascades, the XML files opencv-python-headless 4.x ships in
`cv2.data.haarcascades`. Cheap (tens of milliseconds a frame on CPU) and crude: frontal faces are found well, a side
view or a stylised face less so, and a face-like pattern on a slide now and then."""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np

from pipeline.models.loading import loaded_once

# Haar detection parameters: the OpenCV tutorial's, with 5 neighbours to keep patterns on slides from counting.
SCALE_FACTOR = 1.1
MIN_NEIGHBORS = 5


class FaceDetector:
    def __init__(self, cascades: tuple[str, ...], min_area_share: float) -> None:
        folder = Path(cv2.data.haarcascades)
        self.classifiers = []
        for name in cascades:
            classifier = cv2.CascadeClassifier(str(folder / name))
            if classifier.empty():
                known = sorted(path.name for path in folder.glob("*.xml"))
                raise ValueError(f"no Haar cascade {name!r} in {folder}; known: {', '.join(known)}")
            self.classifiers.append(classifier)
        self.min_area_share = min_area_share
        self._lock = threading.Lock()  # a CascadeClassifier is not safe to share between threads

    def largest_share(self, gray: np.ndarray) -> float:
        """The area share of the frame covered by the largest detection at least `min_area_share` big; 0 if none."""
        height, width = gray.shape
        side = max(1, int((self.min_area_share * width * height) ** 0.5))  # smaller boxes cannot count
        equalized = cv2.equalizeHist(gray)
        largest = 0
        with self._lock:
            for classifier in self.classifiers:
                boxes = classifier.detectMultiScale(
                    equalized, scaleFactor=SCALE_FACTOR, minNeighbors=MIN_NEIGHBORS, minSize=(side, side)
                )
                largest = max([largest, *(int(w) * int(h) for _, _, w, h in boxes)])
        share = largest / (width * height)
        return share if share >= self.min_area_share else 0.0


@loaded_once
def load_face_detector(cascades: tuple[str, ...], min_area_share: float) -> FaceDetector:
    return FaceDetector(cascades, min_area_share)
