"""Dataset format conversion: Pascal VOC XML and YOLO txt labels (boxes, and Ultralytics'
segmentation polygons) to and from COCO.

One file per format; `coco.py` holds what every conversion shares (the COCO builder, box
clipping and the log of dropped records; notes are `detect.data.notes.NoteLog`), `yolo_segments.py` the YOLO polygon lines.
The command line is ``tools/convert.py``.
"""
from detect.data.notes import NoteLog
from detect.formats.coco import CocoBuilder, DropLog
from detect.formats.voc import read_voc_xml, voc_to_coco
from detect.formats.yolo import YoloLabels, coco_to_yolo, read_class_list, write_yolo, yolo_to_coco

__all__ = ["CocoBuilder", "DropLog", "NoteLog", "YoloLabels", "coco_to_yolo", "read_class_list",
           "read_voc_xml", "voc_to_coco", "write_yolo", "yolo_to_coco"]
